package yamlfields

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestMap(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"a: 1\nb: 2\n", ""},
		{"a: 1\nc: 2\n", `line 2: doc: unknown field "c" (want one of a, b)`},
		{"a: 1\na: 2\n", `line 2: doc: field "a" given twice`},
		{"- a\n", "line 1: doc: want a mapping"},
	} {
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(tc.src), &n); err != nil {
			t.Fatal(err)
		}
		m, err := Map(n.Content[0], "doc", "a", "b")
		switch {
		case tc.want == "" && (err != nil || m["b"].Value != "2"):
			t.Errorf("%q: %v %v", tc.src, m, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.want)
		}
	}
}
