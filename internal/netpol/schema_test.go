package netpol

import (
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// The Kubernetes output validates against a strict schema of
// NetworkPolicy v1 (testdata/networkpolicy-v1.schema.json), as kubeconform
// -strict would check it before kubectl apply; and a broken object is
// caught, so the check can fail.
func TestKubernetesSchema(t *testing.T) {
	f, err := os.Open("testdata/networkpolicy-v1.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("networkpolicy.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("networkpolicy.json")
	if err != nil {
		t.Fatal(err)
	}
	out, _ := shopView(t).Kubernetes(shopPods())
	objs := decodeAll(t, out)
	if len(objs) != 3 {
		t.Fatalf("%d objects, want 3", len(objs))
	}
	for i, o := range objs {
		if err := sch.Validate(o); err != nil {
			t.Fatalf("object %d: %v", i, err)
		}
	}
	bad := decodeAll(t, strings.Replace(out, "policyTypes:", "policyType:", 1))
	if err := sch.Validate(bad[0]); err == nil {
		t.Fatal("a misspelt field passed the schema")
	}
}

// decodeAll reads a YAML stream into JSON values (what the validator takes).
func decodeAll(t *testing.T, s string) []any {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(s))
	var out []any
	for {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		j, err := jsonschema.UnmarshalJSON(strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, j)
	}
}
