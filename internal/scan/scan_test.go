package scan_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/scan"
	"github.com/rampartsec/rampart/internal/scan/gobin"
	"github.com/rampartsec/rampart/internal/scan/osv"
	"github.com/rampartsec/rampart/internal/scan/scantest"
)

// Built once for the package (TestMain): the programs, and the pinned Go
// vulnerability database as a local database file.
var (
	bins     = map[string]string{}
	vulnDir  string
	dbFile   string
	setupErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "scan-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	setupErr = setup(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func setup(dir string) error {
	for _, p := range []string{scantest.Called, scantest.NotCalled, scantest.Patched, scantest.Inlined} {
		b, err := scantest.Build(dir, p)
		if err != nil {
			return err
		}
		bins[p] = b
	}
	b, err := scantest.Build(dir, scantest.NotCalled, "-ldflags=-s")
	if err != nil {
		return err
	}
	bins["stripped"] = b
	if vulnDir, err = scantest.VulnDB(); err != nil {
		return err
	}
	entries, err := osv.ReadDir(vulnDir)
	if err != nil {
		return err
	}
	dbFile = filepath.Join(dir, "osv.db")
	return osv.WriteFile(dbFile, osv.Meta{Source: "golang.org/x/vulndb@" + scantest.VulnDBVersion, ImportedAt: time.Unix(1e9, 0)}, entries)
}

func need(t *testing.T) {
	t.Helper()
	if setupErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(setupErr)
		}
		t.Skip(setupErr)
	}
}

func openDB(t *testing.T) *osv.File {
	t.Helper()
	db, err := osv.OpenFile(dbFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// levels maps an OSV id to the deepest level a scan found it at.
func ourLevels(fs []scan.Finding) map[string]string {
	out := map[string]string{}
	for _, f := range fs {
		out[f.ID] = f.Level
	}
	return out
}

// govulncheckLevels runs govulncheck -mode=binary -json against the same
// database and reads the deepest level of each finding: a trace naming a
// function is "symbol", one naming only a package "package", else "module".
func govulncheckLevels(t *testing.T, bin string) map[string]string {
	t.Helper()
	gv, err := scantest.Govulncheck()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	cmd := exec.Command(gv, "-mode=binary", "-json", "-db", "file://"+vulnDir, bin)
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("govulncheck: %v\n%s", err, out)
	}
	rank := map[string]int{"module": 1, "package": 2, "symbol": 3}
	levels := map[string]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var msg struct {
			Finding *struct {
				OSV   string `json:"osv"`
				Trace []struct {
					Package  string `json:"package"`
					Function string `json:"function"`
				} `json:"trace"`
			} `json:"finding"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("govulncheck output: %v", err)
		}
		if msg.Finding == nil || len(msg.Finding.Trace) == 0 {
			continue
		}
		tr := msg.Finding.Trace[0]
		l := "module"
		switch {
		case tr.Function != "":
			l = "symbol"
		case tr.Package != "":
			l = "package"
		}
		if rank[l] > rank[levels[msg.Finding.OSV]] {
			levels[msg.Finding.OSV] = l
		}
	}
	return levels
}

// TestSameFindingsAsGovulncheck scans real binaries built against a
// vulnerable golang.org/x/text, one calling the vulnerable function and
// one not (and a stripped one, and a patched one), and requires exactly
// govulncheck's findings at exactly its levels.
func TestSameFindingsAsGovulncheck(t *testing.T) {
	need(t)
	s := &scan.Scanner{DB: openDB(t)}
	for _, name := range []string{scantest.Called, scantest.NotCalled, scantest.Patched, "stripped"} {
		t.Run(name, func(t *testing.T) {
			rep, err := s.ScanFile(bins[name])
			if err != nil {
				t.Fatal(err)
			}
			ours, theirs := ourLevels(rep.Findings), govulncheckLevels(t, bins[name])
			if len(theirs) == 0 {
				t.Fatal("govulncheck found nothing: the comparison would prove nothing")
			}
			if !mapsEqual(ours, theirs) {
				t.Errorf("findings differ from govulncheck's\nours:   %v\ntheirs: %v", sorted(ours), sorted(theirs))
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func sorted(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// TestCalledVersusNotCalled pins the reachability of GO-2022-1059 itself.
func TestCalledVersusNotCalled(t *testing.T) {
	need(t)
	s := &scan.Scanner{DB: openDB(t)}
	find := func(bin string) *scan.Finding {
		rep, err := s.ScanFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range rep.Findings {
			if f.ID == "GO-2022-1059" {
				return &f
			}
		}
		return nil
	}
	called := find(bins[scantest.Called])
	if called == nil || called.Reachability != scan.Called || !slices.Contains(called.Symbols, "golang.org/x/text/language.ParseAcceptLanguage") {
		t.Errorf("called binary: %+v, want GO-2022-1059 called through language.ParseAcceptLanguage", called)
	}
	if called != nil && (called.Version != "v0.3.7" || !slices.Equal(called.Fixed, []string{"v0.3.8"})) {
		t.Errorf("called binary: version %s fixed %v, want v0.3.7 fixed v0.3.8", called.Version, called.Fixed)
	}
	if nc := find(bins[scantest.NotCalled]); nc == nil || nc.Reachability != scan.NotCalled || nc.Level != scan.LevelPackage {
		t.Errorf("not-called binary: %+v, want GO-2022-1059 not called, at package level", nc)
	}
	if p := find(bins[scantest.Patched]); p != nil {
		t.Errorf("patched binary (x/text v0.3.8) still has GO-2022-1059: %+v", p)
	}
	st := find(bins["stripped"])
	if st == nil || st.Reachability != scan.Called || !strings.Contains(st.Note, "stripped") {
		t.Errorf("stripped binary: %+v, want GO-2022-1059 counted as called, saying why", st)
	}
}

// TestInlinedFunctionsAreFound: lib.Small is inlined into main.main, so it
// has no symbol of its own; only the inline tree names it.
func TestInlinedFunctionsAreFound(t *testing.T) {
	need(t)
	out, err := exec.Command("go", "tool", "nm", bins[scantest.Inlined]).Output()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out, []byte("lib.Small")) {
		t.Fatal("lib.Small has a symbol of its own: it was not inlined, so this test proves nothing")
	}
	f, err := os.Open(bins[scantest.Inlined])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := gobin.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(b.Symbols["example.com/inlined/lib"], "Small") {
		t.Errorf("inlined lib.Small not found; lib has %v", b.Symbols["example.com/inlined/lib"])
	}
	if !slices.Contains(b.Symbols["main"], "main") {
		t.Errorf("main.main not found: %v", b.Symbols["main"])
	}
}

// TestFailOnThreshold: a called finding fails a threshold, a not-called
// one only when asked, an exception excuses one.
func TestFailOnThreshold(t *testing.T) {
	need(t)
	s := &scan.Scanner{DB: openDB(t)}
	rep, err := s.ScanFile(bins[scantest.Called])
	if err != nil {
		t.Fatal(err)
	}
	th := scan.Threshold{Min: osv.High}
	if got := th.Failing(rep.Findings); len(got) != 1 || got[0].ID != "GO-2022-1059" {
		t.Errorf("failing at HIGH: %v, want GO-2022-1059 alone (unrated counts as HIGH)", ids(got))
	}
	th.Unknown = osv.Medium
	if got := th.Failing(rep.Findings); len(got) != 0 {
		t.Errorf("unrated counted as MEDIUM, threshold HIGH: %v failing, want none", ids(got))
	}
	th = scan.Threshold{Min: osv.Low, NotCalled: true}
	if got := th.Failing(rep.Findings); len(got) != len(rep.Findings) {
		t.Errorf("with not-called: %d failing of %d", len(got), len(rep.Findings))
	}
	th = scan.Threshold{Min: osv.Low, Exceptions: func(f scan.Finding) bool { return f.ID == "GO-2022-1059" }}
	if got := th.Failing(rep.Findings); len(got) != 0 {
		t.Errorf("excepted: %v still failing", ids(got))
	}
}

func ids(fs []scan.Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.ID)
	}
	return out
}
