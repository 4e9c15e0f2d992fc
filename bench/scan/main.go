// Command scanbench measures `rampart scan` beside govulncheck (binary mode)
// and osv-scanner on the same inputs and the same offline Go vulnerability
// database: wall time, peak memory (max RSS of the child process) and the
// findings each reports. bench/scan.sh builds the tools and runs it.
package main

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/rampartsec/rampart/internal/scan"
	"github.com/rampartsec/rampart/internal/scan/gobin"
	"github.com/rampartsec/rampart/internal/scan/osv"
	"github.com/rampartsec/rampart/internal/scan/scantest"
)

func main() {
	// -rss FILE PROGRAM ARGS: run PROGRAM and write its peak RSS (KB) to
	// FILE. measure runs every tool through this small process: a child
	// shares its parent's memory until it execs (vfork), and the kernel
	// counts that in the child's peak, so the tools must not be forked from
	// this driver, which holds the inputs in memory.
	if len(os.Args) > 3 && os.Args[1] == "-rss" {
		cmd := exec.Command(os.Args[3], os.Args[4:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		err := cmd.Run()
		if cmd.ProcessState != nil {
			if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
				os.WriteFile(os.Args[2], []byte(fmt.Sprint(ru.Maxrss)), 0o644)
			}
			os.Exit(cmd.ProcessState.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "scanbench -rss:", err)
		os.Exit(127)
	}
	work := flag.String("work", "", "work directory")
	rampart := flag.String("rampart", "", "the rampart binary (also the large Go binary scanned)")
	gvc := flag.String("govulncheck", "", "govulncheck binary")
	osvs := flag.String("osv-scanner", "", "osv-scanner binary")
	runs := flag.Int("runs", 3, "runs per tool and input (the median time is reported)")
	wholeDB := flag.String("whole-db", "", "internal: load every record of this OSV directory, scan the file named by -rampart, print the findings")
	flag.Parse()
	if *wholeDB != "" {
		os.Exit(inProcessWholeDB(*wholeDB, *rampart))
	}
	if err := run(*work, *rampart, *gvc, *osvs, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "scanbench:", err)
		os.Exit(1)
	}
}

// inProcessWholeDB is the server's way: every record of the database
// decoded and indexed in memory, then a binary matched.
func inProcessWholeDB(dir, bin string) int {
	es, err := osv.ReadDir(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	recs := make([]*osv.Record, len(es))
	for i, e := range es {
		recs[i] = e.Record
	}
	es = nil
	ix := osv.NewIndex(osv.Meta{Source: dir, Records: len(recs)}, recs)
	f, err := os.Open(bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	b, err := gobin.Read(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fs, err := scan.MatchGo(ix, b, bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{"reports": []any{map[string]any{"findings": fs}}})
	return 0
}

type result struct {
	tool, input string
	wall        time.Duration
	rssMB       float64
	ids         []string // every finding's OSV id
	called      []string // called (symbol level), where the tool says
	err         string
}

// measure runs a command runs times: the median wall time, the largest
// peak RSS, and the output of the last run.
func measure(runs int, name string, args ...string) (time.Duration, float64, []byte, error) {
	var walls []time.Duration
	var rss int64
	var out []byte
	for range runs {
		rssFile := filepath.Join(os.TempDir(), fmt.Sprintf("scanbench-rss-%d", os.Getpid()))
		cmd := exec.Command(os.Args[0], append([]string{"-rss", rssFile, name}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		err := cmd.Run()
		walls = append(walls, time.Since(start))
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 3 {
			err = nil // govulncheck and rampart --fail-on: findings
		}
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 && strings.Contains(name, "osv-scanner") {
			err = nil // osv-scanner: vulnerabilities found
		}
		if err != nil {
			return 0, 0, nil, fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
		}
		if b, err := os.ReadFile(rssFile); err == nil {
			var kb int64
			fmt.Sscan(string(b), &kb)
			rss = max(rss, kb)
			os.Remove(rssFile)
		}
		out = stdout.Bytes()
	}
	slices.Sort(walls)
	return walls[len(walls)/2], float64(rss) / 1024, out, nil
}

func run(work, rampart, gvc, osvs string, runs int) error {
	if work == "" || rampart == "" || gvc == "" || osvs == "" {
		return fmt.Errorf("-work, -rampart, -govulncheck and -osv-scanner are required")
	}
	vulndb, err := scantest.VulnDB()
	if err != nil {
		return err
	}
	// The same database for each tool: rampart's file, govulncheck's
	// directory, osv-scanner's per-ecosystem all.zip.
	dbFile := filepath.Join(work, "osv.db")
	if out, err := exec.Command(rampart, "scan", "db", "import", "--db", dbFile, "--source", "golang.org/x/vulndb@"+scantest.VulnDBVersion, vulndb).CombinedOutput(); err != nil {
		return fmt.Errorf("import: %v\n%s", err, out)
	}
	osvLocal := filepath.Join(work, "osv-scanner-db")
	if err := zipDir(vulndb, filepath.Join(osvLocal, "osv-scalibr", "Go", "all.zip")); err != nil {
		return err
	}
	// Inputs: the rampart binary (large), and an image tarball holding this
	// machine's dpkg status and os-release and three Go binaries.
	binDir := filepath.Join(work, "bin")
	os.MkdirAll(binDir, 0o755)
	large := filepath.Join(binDir, "rampart")
	if err := copyFile(rampart, large); err != nil {
		return err
	}
	image := filepath.Join(work, "image.tar")
	if err := buildImage(work, image, rampart, gvc); err != nil {
		return err
	}
	st, _ := os.Stat(large)
	ist, _ := os.Stat(image)
	fmt.Printf("inputs: %s (%.1f MB), %s (%.1f MB)\ndatabase: golang.org/x/vulndb@%s\n\n", large, float64(st.Size())/1e6, image, float64(ist.Size())/1e6, scantest.VulnDBVersion)

	var results []result
	add := func(tool, input string, parse func([]byte) ([]string, []string), name string, args ...string) {
		r := result{tool: tool, input: input}
		wall, rss, out, err := measure(runs, name, args...)
		if err != nil {
			r.err = err.Error()
		} else {
			r.wall, r.rssMB = wall, rss
			r.ids, r.called = parse(out)
		}
		results = append(results, r)
	}
	add("rampart scan", "go binary", parseRampart, rampart, "scan", "--db", dbFile, "--format", "json", large)
	add("rampart (whole DB in memory)", "go binary", parseRampart, os.Args[0], "-whole-db", vulndb, "-rampart", large)
	add("govulncheck -mode=binary", "go binary", parseGovulncheck, gvc, "-mode=binary", "-json", "-db", "file://"+vulndb, large)
	add("osv-scanner scan source", "go binary", parseOSVScanner, osvs, "scan", "source", "--offline", "--experimental-plugins", "go/binary", "--local-db-path", osvLocal, "--format", "json", binDir)
	add("rampart scan", "image", parseRampart, rampart, "scan", "--db", dbFile, "--format", "json", image)
	add("osv-scanner scan image", "image", parseOSVScanner, osvs, "scan", "image", "--archive", "--offline", "--experimental-plugins", "artifact", "--experimental-plugins", "go/binary", "--local-db-path", osvLocal, "--format", "json", image)

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOOL\tINPUT\tTIME (median)\tPEAK RSS\tFINDINGS\tCALLED")
	for _, r := range results {
		if r.err != "" {
			fmt.Fprintf(tw, "%s\t%s\terror\t\t\t(below)\n", r.tool, r.input)
			continue
		}
		called := "-"
		if r.called != nil {
			called = fmt.Sprint(len(r.called))
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%.0f MB\t%d\t%s\n", r.tool, r.input, r.wall.Round(time.Millisecond), r.rssMB, len(r.ids), called)
	}
	tw.Flush()
	fmt.Println()
	for _, r := range results {
		if r.err != "" {
			fmt.Printf("%s on %s failed: %s\n\n", r.tool, r.input, r.err)
		}
	}
	// Same findings?
	byKey := map[string]result{}
	for _, r := range results {
		byKey[r.tool+"/"+r.input] = r
	}
	compare := func(a, b string, called bool) {
		ra, rb := byKey[a], byKey[b]
		if ra.err != "" || rb.err != "" {
			fmt.Printf("%s vs %s: not compared (an error)\n", a, b)
			return
		}
		x, y := ra.ids, rb.ids
		what := "findings"
		if called {
			x, y, what = ra.called, rb.called, "called findings"
		}
		onlyA, onlyB := diff(x, y), diff(y, x)
		if len(onlyA) == 0 && len(onlyB) == 0 {
			fmt.Printf("%s vs %s: the same %d %s\n", a, b, len(x), what)
			return
		}
		fmt.Printf("%s vs %s: %s differ; only the first: %v; only the second: %v\n", a, b, what, onlyA, onlyB)
	}
	compare("rampart scan/go binary", "govulncheck -mode=binary/go binary", false)
	compare("rampart scan/go binary", "govulncheck -mode=binary/go binary", true)
	compare("rampart scan/go binary", "rampart (whole DB in memory)/go binary", false)
	compare("rampart scan/go binary", "osv-scanner scan source/go binary", false)
	compare("rampart scan/image", "osv-scanner scan image/image", false)
	return nil
}

func diff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func uniq(s []string) []string {
	sort.Strings(s)
	return slices.Compact(s)
}

func parseRampart(b []byte) ([]string, []string) {
	var doc struct {
		Reports []struct {
			Findings []scan.Finding `json:"findings"`
		} `json:"reports"`
	}
	json.Unmarshal(b, &doc)
	ids, called := []string{}, []string{}
	for _, r := range doc.Reports {
		for _, f := range r.Findings {
			ids = append(ids, f.ID)
			if f.Reachability == scan.Called {
				called = append(called, f.ID)
			}
		}
	}
	return uniq(ids), uniq(called)
}

func parseGovulncheck(b []byte) ([]string, []string) {
	ids, called := []string{}, []string{}
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var m struct {
			Finding *struct {
				OSV   string `json:"osv"`
				Trace []struct {
					Function string `json:"function"`
				} `json:"trace"`
			} `json:"finding"`
		}
		if err := dec.Decode(&m); err != nil {
			break
		}
		if m.Finding == nil {
			continue
		}
		ids = append(ids, m.Finding.OSV)
		if len(m.Finding.Trace) > 0 && m.Finding.Trace[0].Function != "" {
			called = append(called, m.Finding.OSV)
		}
	}
	return uniq(ids), uniq(called)
}

func parseOSVScanner(b []byte) ([]string, []string) {
	var doc struct {
		Results []struct {
			Packages []struct {
				Vulnerabilities []struct {
					ID string `json:"id"`
				} `json:"vulnerabilities"`
			} `json:"packages"`
		} `json:"results"`
	}
	json.Unmarshal(b, &doc)
	ids := []string{}
	for _, r := range doc.Results {
		for _, p := range r.Packages {
			for _, v := range p.Vulnerabilities {
				ids = append(ids, v.ID)
			}
		}
	}
	return uniq(ids), nil
}

func zipDir(dir, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		w, err := zw.Create(e.Name())
		if err != nil {
			return err
		}
		w.Write(b)
	}
	return zw.Close()
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func buildImage(work, out, rampart, gvc string) error {
	called, err := scantest.Build(work, scantest.Called)
	if err != nil {
		return err
	}
	read := func(p string) []byte {
		b, _ := os.ReadFile(p)
		return b
	}
	status := read("/var/lib/dpkg/status")
	osRelease := read("/etc/os-release")
	layers := []scantest.Layer{
		{Compress: "gzip", Entries: []scantest.Entry{
			{Name: "etc/os-release", Body: osRelease},
			{Name: "var/lib/dpkg/status", Body: status},
			{Name: "usr/bin/called", Body: read(called), Mode: 0o755},
		}},
		{Compress: "gzip", Entries: []scantest.Entry{
			{Name: "usr/local/bin/rampart", Body: read(rampart), Mode: 0o755},
			{Name: "usr/local/bin/govulncheck", Body: read(gvc), Mode: 0o755},
		}},
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	return scantest.WriteDockerSave(f, "rampart/bench:latest", layers)
}
