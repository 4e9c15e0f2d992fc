package server

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/rampartsec/rampart/internal/permission"
)

// rolesDoc renders the roles and the permission × role table from package
// permission and the route table.
func rolesDoc(rs []Route) string {
	var b strings.Builder
	b.WriteString("\n| role | for |\n| --- | --- |\n")
	for _, r := range permission.Roles {
		scoped := ""
		if r.Scoped {
			scoped = " May be limited to services (`--service`)."
		}
		fmt.Fprintf(&b, "| `%s` | %s.%s |\n", r.Role, r.For, scoped)
	}
	b.WriteString("\n| permission | endpoints |")
	for _, r := range permission.Roles {
		fmt.Fprintf(&b, " %s |", r.Role)
	}
	b.WriteString("\n| --- | --- |" + strings.Repeat(" :-: |", len(permission.Roles)) + "\n")
	for _, p := range permission.All {
		var eps []string
		for _, rt := range rs {
			if rt.Permission == p.Permission {
				eps = append(eps, rt.Method+" `"+rt.Path+"`")
			}
		}
		if len(eps) == 0 {
			eps = []string{"(Respond's, to come)"}
		}
		fmt.Fprintf(&b, "| `%s` | %s |", p.Permission, strings.Join(eps, "<br>"))
		for _, r := range permission.Roles {
			mark := ""
			if r.Role.Allows(p.Permission) {
				mark = "✓"
			}
			fmt.Fprintf(&b, " %s |", mark)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestOperatorsDoc keeps the roles table of docs/operators.md in step with
// package permission and the route table (-update rewrites it).
func TestOperatorsDoc(t *testing.T) {
	const path = "../../docs/operators.md"
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- roles:begin -->", "<!-- roles:end -->"
	i, j := strings.Index(string(doc), begin), strings.Index(string(doc), end)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the %s ... %s markers", path, begin, end)
	}
	want := string(doc[:i+len(begin)]) + rolesDoc(routeServer(t).routes()) + string(doc[j:])
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if string(doc) != want {
		t.Fatal("docs/operators.md's roles table is out of date: run go test ./internal/server -run TestOperatorsDoc -update")
	}
}
