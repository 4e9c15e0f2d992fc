package permission

import (
	"regexp"
	"testing"
)

// Names are noun.verb, lower case, each listed once with what it allows.
func TestVocabulary(t *testing.T) {
	name := regexp.MustCompile(`^[a-z]+(\.[a-z]+)*\.[a-z]+$`)
	seen := map[Permission]bool{}
	for _, i := range All {
		if !name.MatchString(string(i.Permission)) {
			t.Errorf("%q is not noun.verb", i.Permission)
		}
		if seen[i.Permission] {
			t.Errorf("%q listed twice", i.Permission)
		}
		seen[i.Permission] = true
		if i.Allows == "" {
			t.Errorf("%q says nothing about what it allows", i.Permission)
		}
		if !i.Permission.Valid() {
			t.Errorf("%q not Valid", i.Permission)
		}
	}
	if Permission("entry.delete").Valid() || Permission("").Valid() {
		t.Error("a name outside the vocabulary is Valid")
	}
	if !EntryRead.ReadOnly() || EntryWrite.ReadOnly() || AgentEvict.ReadOnly() {
		t.Error("ReadOnly")
	}
}
