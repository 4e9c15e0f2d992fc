package respond

import (
	"embed"
	"io/fs"
	"sort"
)

//go:embed defaults/*.yaml
var defaultFS embed.FS

// Defaults returns the shipped playbooks for the default detection rules,
// by file name (rampart playbook defaults writes them out; none is
// installed by itself: what runs without a person is the operator's
// decision).
func Defaults() map[string][]byte {
	out := map[string][]byte{}
	names, _ := fs.Glob(defaultFS, "defaults/*.yaml")
	sort.Strings(names)
	for _, n := range names {
		b, _ := defaultFS.ReadFile(n)
		out[n[len("defaults/"):]] = b
	}
	return out
}
