package respond

import (
	"testing"

	"github.com/rampartsec/rampart/internal/detect"
)

// Every shipped playbook is valid against the default detection rules and
// triggered by one of them.
func TestDefaultPlaybooks(t *testing.T) {
	rs, err := detect.Parse(detect.DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	ds := Defaults()
	if len(ds) < 4 {
		t.Fatalf("%d default playbooks", len(ds))
	}
	for name, src := range ds {
		p, err := Parse(src, rs.HasRule)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if p.Name+".yaml" != name || len(p.Trigger.Rules) == 0 {
			t.Errorf("%s: name %q, trigger %v", name, p.Name, p.Trigger.Rules)
		}
	}
}
