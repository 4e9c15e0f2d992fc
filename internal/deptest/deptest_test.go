package deptest

import (
	"bytes"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/rampartsec/rampart"

// pkg is one package of `go list -deps`.
type pkg struct {
	path     string
	standard bool
	imports  []string
}

// graph is the import graph of patterns, without tests.
type graph struct {
	roots []string        // the packages the patterns name
	pkgs  map[string]*pkg // every package they reach
}

func goList(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func load(t *testing.T, patterns ...string) *graph {
	t.Helper()
	g := &graph{pkgs: map[string]*pkg{}}
	g.roots = strings.Fields(goList(t, patterns...))
	for line := range strings.Lines(goList(t, append([]string{"-deps", "-f", "{{.ImportPath}}\t{{.Standard}}\t{{join .Imports \" \"}}"}, patterns...)...)) {
		f := strings.Split(strings.TrimRight(line, "\n"), "\t")
		if len(f) != 3 {
			t.Fatalf("go list: unexpected line %q", line)
		}
		g.pkgs[f[0]] = &pkg{path: f[0], standard: f[1] == "true", imports: strings.Fields(f[2])}
	}
	if len(g.roots) == 0 || len(g.pkgs) == 0 {
		t.Fatalf("go list %v: no packages", patterns)
	}
	return g
}

// chain returns the shortest import chain from one of the roots to target,
// for the error message.
func (g *graph) chain(target string) []string {
	prev := map[string]string{}
	queue := []string{}
	for _, r := range g.roots {
		prev[r] = ""
		queue = append(queue, r)
	}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == target {
			var out []string
			for ; p != ""; p = prev[p] {
				out = append(out, strings.TrimPrefix(p, module+"/"))
			}
			slices.Reverse(out)
			return out
		}
		for _, imp := range g.pkgs[p].imports {
			if _, seen := prev[imp]; !seen && g.pkgs[imp] != nil {
				prev[imp] = p
				queue = append(queue, imp)
			}
		}
	}
	return []string{target}
}

// ban is a package, or with a trailing "/..." a package and everything
// below it, that a rule keeps out, with the reason.
type ban struct {
	pattern string
	why     string
}

func (b ban) matches(path string) bool {
	if prefix, ok := strings.CutSuffix(b.pattern, "/..."); ok {
		return path == prefix || strings.HasPrefix(path, prefix+"/")
	}
	return path == b.pattern
}

// serverOnly is what the data plane must not compile. database/sql itself
// is not in it: the drivers are what cost, and prometheus/collectors (the
// agent's Go and process metrics) imports database/sql for its DBStats
// collector.
var serverOnly = []ban{
	{module + "/internal/server/...", "the server's wiring and handlers"},
	{module + "/internal/store/...", "the store (SQLite and PostgreSQL)"},
	{"modernc.org/sqlite/...", "the SQLite driver"},
	{"github.com/jackc/pgx/...", "the PostgreSQL driver"},
	{"github.com/lib/pq/...", "a PostgreSQL driver"},
	{"github.com/mattn/go-sqlite3/...", "a SQLite driver (cgo)"},
	{"github.com/miekg/pkcs11/...", "the PKCS#11 binding (cgo), for the server's master key"},
	{module + "/internal/keywrap/...", "the server's key wrapping (PKCS#11, passphrases)"},
	{module + "/internal/identity", "the CA (it imports the store): use internal/identity/ids for the SPIFFE ID rules"},
	{module + "/internal/kms", "the key store: use internal/kms/envelope for the envelope format"},
	{module + "/internal/audit", "the audit log's writer: use internal/audit/auditentry for entries, internal/audit/spool to ship them"},
	{module + "/internal/objstore/...", "the audit archive's object store"},
	{module + "/internal/backup/...", "the server's backups"},
	{module + "/internal/oauth/...", "the server's authorization server"},
	{module + "/internal/detect/...", "the server's detection engine"},
}

// checkBans fails for each ban that patterns reach, once, with the
// shortest import chain to it.
func checkBans(t *testing.T, patterns []string, bans []ban) {
	t.Helper()
	g := load(t, patterns...)
	for _, b := range bans {
		var hit []string
		for p := range g.pkgs {
			if b.matches(p) {
				hit = append(hit, p)
			}
		}
		if len(hit) == 0 {
			continue
		}
		best := g.chain(hit[0])
		for _, p := range hit[1:] {
			if c := g.chain(p); len(c) < len(best) || len(c) == len(best) && c[len(c)-1] < best[len(best)-1] {
				best = c
			}
		}
		more := ""
		if len(hit) > 1 {
			more = fmt.Sprintf(" and %d more packages", len(hit)-1)
		}
		t.Errorf("%s reaches %s%s (%s):\n\t%s", strings.Join(patterns, " "), best[len(best)-1], more, b.why, strings.Join(best, "\n\t-> "))
	}
}

// The SDK and the proxy compile nothing of the server: a service that
// imports the SDK builds no database driver, HSM binding or log writer.
func TestDataPlaneDependsOnNothingOfTheServer(t *testing.T) {
	checkBans(t, []string{"./sdk/...", "./internal/proxy/..."}, serverOnly)
}

// The agent runs on every host: it compiles neither the server nor the
// store.
func TestAgentDependsOnNothingOfTheServer(t *testing.T) {
	checkBans(t, []string{"./internal/agent/..."}, serverOnly)
}

// The leaves the data plane shares with the server stay leaves: the
// standard library, golang.org/x/crypto and go-spiffe (without what needs
// more: its Workload API client brings gRPC, which fails here).
func TestSharedLeavesImportOnlyTheStandardLibrary(t *testing.T) {
	leaves := []string{"./internal/identity/ids", "./internal/audit/auditentry", "./internal/kms/envelope", "./sdk/decision"}
	allowed := []ban{{pattern: "golang.org/x/crypto/..."}, {pattern: "github.com/spiffe/go-spiffe/v2/..."}}
	g := load(t, leaves...)
	for _, p := range g.pkgs {
		if p.standard || slices.Contains(g.roots, p.path) || slices.ContainsFunc(allowed, func(b ban) bool { return b.matches(p.path) }) {
			continue
		}
		t.Errorf("a shared leaf reaches %s:\n\t%s", p.path, strings.Join(g.chain(p.path), "\n\t-> "))
	}
}

// keyMakers are the packages that make keys, tokens, nonces or serial
// numbers (a "/..." pattern covers a tree, packages yet to come included).
var keyMakers = []string{
	"internal/identity/...", "internal/svid", "internal/keywrap", "internal/kms/...", "internal/oauth/...",
	"internal/dpop", "internal/accesstoken", "internal/backup/...", "internal/agent/...", "internal/server/...",
	"internal/acme/...", "sdk/...", "cmd/...",
}

// Keys come from crypto/rand: a package that makes them imports neither
// math/rand nor math/rand/v2, whose output is predictable.
func TestKeyMakersUseCryptoRand(t *testing.T) {
	out := goList(t, "-f", "{{.ImportPath}}\t{{join .Imports \" \"}}", "./...")
	checked := 0
	for line := range strings.Lines(out) {
		path, imports, _ := strings.Cut(strings.TrimSpace(line), "\t")
		rel := strings.TrimPrefix(path, module+"/")
		if !slices.ContainsFunc(keyMakers, func(p string) bool { return ban{pattern: p}.matches(rel) }) {
			continue
		}
		checked++
		for _, imp := range strings.Fields(imports) {
			if imp == "math/rand" || imp == "math/rand/v2" {
				t.Errorf("%s imports %s: a package that makes keys, tokens or serials takes its randomness from crypto/rand", rel, imp)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d packages matched the key makers' patterns: the list is stale", checked)
	}
}

func TestBanMatches(t *testing.T) {
	for _, tt := range []struct {
		pattern, path string
		want          bool
	}{
		{"a/b/...", "a/b", true},
		{"a/b/...", "a/b/c", true},
		{"a/b/...", "a/bc", false},
		{"a/b", "a/b", true},
		{"a/b", "a/b/c", false},
	} {
		if got := (ban{pattern: tt.pattern}).matches(tt.path); got != tt.want {
			t.Errorf("%q matches %q = %v", tt.pattern, tt.path, got)
		}
	}
}
