package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestScanReadsFromAnIndex(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir)
	fill(t, l, 0, 50)
	for _, from := range []int64{0, 1, 37, 49, 50, 99} {
		var got []int64
		err := Scan(dir, from, func(i int64, raw []byte) error {
			e, err := ParseEntry(raw)
			if err != nil {
				return err
			}
			if e.Details["n"] != itoa(i) {
				t.Fatalf("index %d holds entry n=%s", i, e.Details["n"])
			}
			got = append(got, i)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := max(0, 50-from)
		if int64(len(got)) != want || (want > 0 && got[0] != from) {
			t.Fatalf("from %d: read %d entries starting %v, want %d", from, len(got), got[:min(1, len(got))], want)
		}
	}
	// ErrStop ends early without an error.
	n := 0
	if err := Scan(dir, 0, func(int64, []byte) error { n++; return ErrStop }); err != nil || n != 1 {
		t.Fatalf("stop: %v after %d", err, n)
	}
	if c, err := Count(dir); err != nil || c != 50 {
		t.Fatalf("count %d %v", c, err)
	}
}

func itoa(i int64) string { return jsonNum(i) }

func jsonNum(i int64) string { b, _ := json.Marshal(i); return string(b) }

func TestFilter(t *testing.T) {
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	e := &Entry{V: 1, Time: base, Actor: Actor{SpiffeID: "spiffe://example.org/orders", User: "alice"}, Action: "authz.decision",
		Target: "spiffe://example.org/payments", Outcome: OutcomeDenied}
	for _, tc := range []struct {
		name string
		f    Filter
		want bool
	}{
		{"empty matches", Filter{}, true},
		{"since inclusive", Filter{Since: base}, true},
		{"since after", Filter{Since: base.Add(time.Nanosecond)}, false},
		{"until exclusive", Filter{Until: base}, false},
		{"until after", Filter{Until: base.Add(time.Second)}, true},
		{"actor spiffe", Filter{Actor: "spiffe://example.org/orders"}, true},
		{"actor user", Filter{Actor: "alice"}, true},
		{"actor pattern", Filter{Actor: "spiffe://example.org/*"}, true},
		{"actor other", Filter{Actor: "bob"}, false},
		{"action pattern", Filter{Action: "authz.*"}, true},
		{"action other", Filter{Action: "svid.*"}, false},
		{"target", Filter{Target: "spiffe://example.org/payments"}, true},
		{"target other", Filter{Target: "spiffe://example.org/orders"}, false},
		{"outcome", Filter{Outcome: OutcomeDenied}, true},
		{"outcome other", Filter{Outcome: OutcomeSuccess}, false},
	} {
		if err := tc.f.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := tc.f.Match(e); got != tc.want {
			t.Errorf("%s: match = %v, want %v", tc.name, got, tc.want)
		}
	}
	for _, bad := range []Filter{{Action: "[a-"}, {Outcome: "maybe"}, {Since: base, Until: base}} {
		if err := bad.Validate(); err == nil {
			t.Errorf("filter %+v accepted", bad)
		}
	}
}

// syslogLine is RFC 5424's SYSLOG-MSG with structured data, as a pattern.
var syslogLine = regexp.MustCompile(`^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\S{1,255}) rampart - (\S{1,32}) \[audit@32473 index="(\d+)"((?: [a-z]+="(?:[^"\\\]]|\\["\\\]])*")*)\] \x{FEFF}(\{.*\})$`)

func TestExportFormats(t *testing.T) {
	e := entry(7)
	e.Outcome, e.Reason = OutcomeDenied, "no rule"
	e.Target = `spiffe://example.org/pay"ments]` // hostile characters must be escaped
	e.Actor.User = "bob"

	var b bytes.Buffer
	x := &Exporter{W: &b, Format: FormatSyslog, Hostname: "host 1"}
	if err := x.Write(42, e); err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSuffix(b.String(), "\n")
	m := syslogLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("not an RFC 5424 line: %q", line)
	}
	if m[1] != "108" || m[3] != "host1" || m[4] != "authz.decision" || m[5] != "42" {
		t.Fatalf("PRI %s host %s msgid %s index %s", m[1], m[3], m[4], m[5])
	}
	if !strings.Contains(m[6], `target="spiffe://example.org/pay\"ments\]"`) {
		t.Fatalf("structured data not escaped: %s", m[6])
	}
	var back Entry
	if err := json.Unmarshal([]byte(m[7]), &back); err != nil || back.Target != e.Target {
		t.Fatalf("MSG is not the entry: %v", err)
	}

	b.Reset()
	x = &Exporter{W: &b, Format: FormatESBulk, Origin: "example.org/audit"}
	x.Write(0, e)
	x.Write(1, entry(8))
	sc := bufio.NewScanner(&b)
	var lines []map[string]any
	for sc.Scan() {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("bulk line %q: %v", sc.Text(), err)
		}
		lines = append(lines, v)
	}
	if len(lines) != 4 {
		t.Fatalf("%d bulk lines, want action+document twice", len(lines))
	}
	meta := lines[2]["index"].(map[string]any)
	if meta["_index"] != "rampart-audit" || meta["_id"] != "example.org/audit/1" {
		t.Fatalf("bulk action %v", meta)
	}
	if lines[1]["@timestamp"] == nil || lines[1]["action"] != "authz.decision" || lines[1]["log_index"] != float64(0) {
		t.Fatalf("bulk document %v", lines[1])
	}

	b.Reset()
	x = &Exporter{W: &b, Format: FormatJSONLines}
	x.Write(5, e)
	var jl struct {
		Index int64 `json:"index"`
		Entry
	}
	if err := json.Unmarshal(b.Bytes(), &jl); err != nil || jl.Index != 5 || jl.Action != e.Action {
		t.Fatalf("jsonl %q: %v", b.String(), err)
	}
	if err := (&Exporter{W: &b, Format: "csv"}).Write(0, e); err == nil {
		t.Fatal("unknown format accepted")
	}
}

// TestScanTimeSkipsBlocks: a time-range scan reads only the blocks that
// can hold matching entries, finds exactly what a full scan finds (also
// entries that arrived late, out of time order), and keeps its index
// across runs.
func TestScanTimeSkipsBlocks(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 5*TimeBlock + 100
	var es []*Entry
	for i := range n {
		e := entry(i)
		e.Time = base.Add(time.Duration(i) * time.Minute)
		if i == 3*TimeBlock+7 {
			e.Time = base.Add(10 * time.Minute) // delivered late from a spool
		}
		es = append(es, e)
	}
	if _, err := l.AppendEntries(context.Background(), es...); err != nil {
		t.Fatal(err)
	}
	since, until := base.Add(time.Duration(TimeBlock+10)*time.Minute), base.Add(time.Duration(TimeBlock+20)*time.Minute)
	f := Filter{Since: since, Until: until}
	match := func(scan func(func(int64, []byte) error) error) (hits []int64, read int) {
		if err := scan(func(i int64, raw []byte) error {
			read++
			e, err := ParseEntry(raw)
			if err != nil {
				return err
			}
			if f.Match(e) {
				hits = append(hits, i)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return hits, read
	}
	want, all := match(func(fn func(int64, []byte) error) error { return Scan(dir, 0, fn) })
	for _, pass := range []string{"building the index", "with the index"} {
		got, read := match(func(fn func(int64, []byte) error) error { return ScanTime(dir, since, until, fn) })
		if len(got) != 10 || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: %v, want %v", pass, got, want)
		}
		// Block 1 holds the range; block 3's range reaches back to its
		// late entry, so it spans the window too; the unfinished last
		// block (100 entries) has no index record yet. Blocks 0, 2 and 4
		// are skipped.
		if read != 2*TimeBlock+100 || all != n {
			t.Fatalf("%s: read %d entries (full scan %d), want two blocks and the tail, %d", pass, read, all, 2*TimeBlock+100)
		}
	}
	// The late entry of block 3 is found by a range that covers its time.
	lateSince, lateUntil := base.Add(10*time.Minute), base.Add(11*time.Minute)
	f = Filter{Since: lateSince, Until: lateUntil}
	got, read := match(func(fn func(int64, []byte) error) error { return ScanTime(dir, lateSince, lateUntil, fn) })
	if fmt.Sprint(got) != fmt.Sprint([]int64{10, 3*TimeBlock + 7}) || read != 2*TimeBlock+100 {
		t.Fatalf("late entry: %v after reading %d entries", got, read)
	}
	if fi, err := os.Stat(filepath.Join(dir, timeIndexFile)); err != nil || fi.Size() != 5*16 {
		t.Fatalf("index file: %v %v", fi, err)
	}
}

// BenchmarkQueryLastHour: the last hour of a 400,000-entry log (one entry
// a second), by a full scan and through the time index.
func BenchmarkQueryLastHour(b *testing.B) {
	dir := b.TempDir()
	l := openLog(b, dir)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 400_000
	for start := 0; start < n; start += 10_000 {
		es := make([]*Entry, 10_000)
		for i := range es {
			es[i] = entry(start + i)
			es[i].Time = base.Add(time.Duration(start+i) * time.Second)
		}
		if _, err := l.AppendEntries(context.Background(), es...); err != nil {
			b.Fatal(err)
		}
	}
	since := base.Add(n*time.Second - time.Hour)
	count := func(i int64, raw []byte) error { _, err := entryTime(raw); return err }
	b.Run("full-scan", func(b *testing.B) {
		for b.Loop() {
			if err := Scan(dir, 0, count); err != nil {
				b.Fatal(err)
			}
		}
	})
	ScanTime(dir, since, time.Time{}, count) // builds the index once
	b.Run("time-index", func(b *testing.B) {
		for b.Loop() {
			if err := ScanTime(dir, since, time.Time{}, count); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The time index is written without fsync: after a crash its end can hold
// zeros, which read as blocks spanning no time. Queries used to trust them
// and skip those blocks, silently missing their entries; now a record that
// cannot be right is rebuilt from the entries. An index edited to hide a
// block from queries is reported by verify.
func TestTimeIndexDistrustsWhatACrashLeaves(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 3 * TimeBlock
	es := make([]*Entry, n)
	for i := range es {
		es[i] = entry(i)
		es[i].Time = base.Add(time.Duration(i) * time.Minute)
	}
	if _, err := l.AppendEntries(context.Background(), es...); err != nil {
		t.Fatal(err)
	}
	signer, verifier := keys(t)
	if _, err := l.Checkpoint(signer); err != nil {
		t.Fatal(err)
	}
	since := base.Add(time.Duration(TimeBlock+10) * time.Minute)
	until := since.Add(5 * time.Minute)
	hits := func() int {
		n := 0
		if err := ScanTime(dir, since, until, func(i int64, raw []byte) error {
			if e, _ := ParseEntry(raw); e != nil && !e.Time.Before(since) && e.Time.Before(until) {
				n++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := hits(); got != 5 {
		t.Fatalf("%d entries in the window, want 5", got)
	}
	p := filepath.Join(dir, timeIndexFile)
	idx, _ := os.ReadFile(p)
	zeroed := bytes.Clone(idx)
	clear(zeroed[16:32]) // block 1, as a crash can leave it
	os.WriteFile(p, zeroed, 0o600)
	if got := hits(); got != 5 {
		t.Fatalf("with block 1's index record zeroed, %d entries in the window, want 5", got)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, idx) {
		t.Fatal("the zeroed record was not rebuilt")
	}

	// Someone makes block 1 look like it spans other times.
	edited := bytes.Clone(idx)
	binary.BigEndian.PutUint64(edited[16:], uint64(base.Add(-48*time.Hour).UnixNano()))
	binary.BigEndian.PutUint64(edited[24:], uint64(base.Add(-47*time.Hour).UnixNano()))
	os.WriteFile(p, edited, 0o600)
	rep, err := Verify(dir, verifier)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Problems) != 1 || rep.Problems[0].Kind != "index" || rep.Problems[0].Index != TimeBlock || rep.Problems[0].Path != timeIndexFile {
		t.Fatalf("an edited time index was not reported: %v", rep.Problems)
	}
}
