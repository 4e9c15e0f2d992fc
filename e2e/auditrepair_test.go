package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/s3test"
)

// joinTokens makes n audited admin calls.
func joinTokens(t *testing.T, s *server, n int) {
	t.Helper()
	client, token := adminHTTP(t, s)
	for range n {
		req, _ := http.NewRequest(http.MethodPost, "https://"+s.addr+"/v1/join-tokens", strings.NewReader(`{"agent_name":"node"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
			t.Fatalf("join token: %s", resp.Status)
		}
	}
}

// newestCheckpoint is the tree size in DIR/audit/checkpoint.
func newestCheckpoint(t *testing.T, auditDir string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(auditDir, "checkpoint"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		t.Fatalf("checkpoint %q: %v", b, err)
	}
	return n
}

// entryOffset is where entry i starts in entries.log (from offsets.bin).
func entryOffset(t *testing.T, auditDir string, i int64) int64 {
	t.Helper()
	f, err := os.Open(filepath.Join(auditDir, "offsets.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], 8*i); err != nil {
		t.Fatalf("offset of entry %d: %v", i, err)
	}
	return int64(binary.BigEndian.Uint64(b[:]))
}

// cutLog removes entries k and later from every file that records them,
// as someone with write access to the data directory would to make them
// disappear without a trace in the log itself.
func cutLog(t *testing.T, auditDir string, k int64) {
	t.Helper()
	off := entryOffset(t, auditDir, k)
	for name, size := range map[string]int64{"entries.log": off, "offsets.bin": 8 * k, "hashes.bin": tlog.StoredHashCount(k) * tlog.HashSize} {
		if err := os.Truncate(filepath.Join(auditDir, name), size); err != nil {
			t.Fatal(err)
		}
	}
}

// startServerFails starts a server that must refuse to start, and returns
// what it printed.
func startServerFails(t *testing.T, dir string) string {
	t.Helper()
	ready := filepath.Join(dir, "ready")
	os.Remove(ready)
	p := start(t, []string{"RAMPART_READY_FILE=" + ready}, "server", "--data", dir, "--listen", "127.0.0.1:0", "--trust-domain", "example.org")
	deadline := time.After(60 * time.Second)
	for {
		select {
		case <-p.done:
			if p.cmd.ProcessState.Success() {
				t.Fatalf("the server exited with status 0:\n%s", p.out.String())
			}
			return p.out.String()
		case <-deadline:
			t.Fatalf("the server neither started nor failed within 60 s:\n%s", p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := os.Stat(ready); err == nil {
			p.stop()
			t.Fatalf("the server started:\n%s", p.out.String())
		}
	}
}

// TestAuditFinalCheckpointIsTheLastWrite: a server stopping with a segment
// to seal and an archive to copy it to records both, and the checkpoint it
// signs on the way out must cover those entries too. Otherwise they can be
// cut from the end of the log (entries, offsets and hashes alike) and
// verify finds nothing wrong.
func TestAuditFinalCheckpointIsTheLastWrite(t *testing.T) {
	srv := s3test.Start(t, "audit")
	srv.Env(t)
	dir := t.TempDir()
	s := startServer(t, dir, "--audit-segment-entries", "256", "--audit-archive", srv.URL("prod"))
	joinTokens(t, s, 300)
	s.stop() // checkpoint, seal, archive on the way out

	ad := filepath.Join(dir, "audit")
	n, err := audit.Count(ad)
	if err != nil {
		t.Fatal(err)
	}
	if out := mustCLI(t, nil, "audit", "query", "--data", dir, "--action", "audit.*"); !strings.Contains(out, "audit.seal") || !strings.Contains(out, "audit.archive") {
		t.Fatalf("the shutdown did not seal and archive (the test did not exercise what it is about):\n%s", out)
	}
	if cp := newestCheckpoint(t, ad); cp != n {
		t.Errorf("the final checkpoint covers %d of the %d entries: the ones after it were written after the checkpoint", cp, n)
	}
	// The archive has the final checkpoint too: it vouches for the log
	// from outside the machine while the server is down.
	if b, err := os.ReadFile(filepath.Join(srv.Root, "audit", "prod", "checkpoints", strconv.FormatInt(n, 10))); err != nil || !bytes.Contains(b, []byte("\n"+strconv.FormatInt(n, 10)+"\n")) {
		t.Errorf("the archive lacks the final checkpoint of %d entries: %v", n, err)
	}

	// The attack: cut the last entry from every file.
	cutLog(t, ad, n-1)
	out, err := cli(t, nil, "audit", "verify", "--data", dir)
	if err == nil {
		t.Fatalf("verify found nothing wrong after the last entry was cut:\n%s", out)
	}
	if !strings.Contains(out, fmt.Sprintf("signed for %d entries; the log has %d", n, n-1)) {
		t.Fatalf("verify did not say which checkpoint lost entries:\n%s", out)
	}
}

// TestAuditVerifyReportsUncoveredEntries: entries appended after the newest
// checkpoint (a crash before the next one) are not vouched for by any
// signature: verify says how many, as a warning, and fails with --strict.
func TestAuditVerifyReportsUncoveredEntries(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	joinTokens(t, s, 3)
	s.stop()
	ad := filepath.Join(dir, "audit")
	cp := newestCheckpoint(t, ad)
	if out := mustCLI(t, nil, "audit", "verify", "--data", dir); !strings.Contains(out, "not yet covered: 0 entries") {
		t.Fatalf("verify of a cleanly stopped log:\n%s", out)
	}

	// As a crash would leave it: three entries past the newest checkpoint.
	l, err := audit.Open(ad, "example.org/audit")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e := &audit.Entry{V: 1, Time: time.Now(), Actor: audit.Actor{User: "alice"}, Action: "test.uncovered", Outcome: audit.OutcomeSuccess, Details: map[string]string{"n": strconv.Itoa(i)}}
		if _, err := l.AppendEntries(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()

	want := fmt.Sprintf("not yet covered: 3 entries past the newest checkpoint (tree size %d)", cp)
	out, err := cli(t, nil, "audit", "verify", "--data", dir)
	if err != nil || !strings.Contains(out, want) {
		t.Fatalf("verify: %v, want a warning %q:\n%s", err, want, out)
	}
	out, err = cli(t, nil, "audit", "verify", "--data", dir, "--strict")
	if err == nil || !strings.Contains(out, want) {
		t.Fatalf("verify --strict: %v, want a failure naming %q:\n%s", err, want, out)
	}
	out, _ = cli(t, nil, "audit", "verify", "--data", dir, "--json")
	if !strings.Contains(out, `"uncovered": 3`) || !strings.Contains(out, fmt.Sprintf(`"covered": %d`, cp)) {
		t.Fatalf("verify --json does not give the uncovered count:\n%s", out)
	}
}

// TestAuditDamagedLogRefusesStartThenRepair: one damaged entry in the middle
// of entries.log, under a signed checkpoint. The server must not cut the
// log there (which dropped every intact entry after it and signed a
// shorter log over them): it refuses to start, names the file, the offset
// and the entries at stake, and changes nothing. "rampart audit repair"
// moves the damaged tail aside, records that in the log, and the server
// starts; verify says what was quarantined.
func TestAuditDamagedLogRefusesStartThenRepair(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	joinTokens(t, s, 40)
	s.stop()
	ad := filepath.Join(dir, "audit")
	n, err := audit.Count(ad)
	if err != nil {
		t.Fatal(err)
	}
	if cp := newestCheckpoint(t, ad); cp != n {
		t.Fatalf("checkpoint covers %d of %d entries", cp, n)
	}
	k := n / 2
	off := entryOffset(t, ad, k)
	// Damage entry k's length: the bytes no longer frame a record.
	f, err := os.OpenFile(filepath.Join(ad, "entries.log"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff, 0xff, 0xff}, off)
	f.Close()
	snapshot := func() map[string][]byte {
		m := map[string][]byte{}
		for _, name := range []string{"entries.log", "offsets.bin", "hashes.bin", "checkpoint"} {
			m[name], _ = os.ReadFile(filepath.Join(ad, name))
		}
		return m
	}
	before := snapshot()

	out := startServerFails(t, dir)
	for _, want := range []string{filepath.Join(ad, "entries.log"), fmt.Sprintf("offset %d", off), fmt.Sprintf("entries %d to %d", k, n-1), "rampart audit repair"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal does not say %q:\n%s", want, out)
		}
	}
	for name, b := range snapshot() {
		if !bytes.Equal(b, before[name]) {
			t.Errorf("%s changed although the server refused to start", name)
		}
	}
	if out, err := cli(t, nil, "audit", "verify", "--data", dir); err == nil || !strings.Contains(out, fmt.Sprintf("unreadable at %d", k)) {
		t.Fatalf("verify of the damaged log: %v\n%s", err, out)
	}

	out = mustCLI(t, nil, "audit", "repair", "--data", dir)
	for _, want := range []string{fmt.Sprintf("entries %d to %d", k, n-1), "quarantine", `"action":"audit.repair"`} {
		if !strings.Contains(out, want) {
			t.Errorf("repair's report does not say %q:\n%s", want, out)
		}
	}
	tails, _ := filepath.Glob(filepath.Join(ad, "quarantine", "*", "entries.log.tail"))
	if len(tails) != 1 {
		t.Fatalf("%d quarantined tails, want 1", len(tails))
	}
	if b, _ := os.ReadFile(tails[0]); !bytes.Equal(b, before["entries.log"][off:]) {
		t.Fatal("the quarantined tail is not the damaged part of entries.log, byte for byte")
	}

	s = startServer(t, dir)
	joinTokens(t, s, 2)
	s.stop()
	out, err = cli(t, nil, "audit", "verify", "--data", dir)
	if err != nil {
		t.Fatalf("verify after repair: %v\n%s", err, out)
	}
	for _, want := range []string{fmt.Sprintf("quarantined: entries %d to %d", k, n-1), fmt.Sprintf("%d intact", n-1-k), fmt.Sprintf("damaged: %d", k), "recorded as entry " + strconv.FormatInt(k, 10)} {
		if !strings.Contains(out, want) {
			t.Errorf("verify after repair does not say %q:\n%s", want, out)
		}
	}
	if out, err := cli(t, nil, "audit", "verify", "--data", dir, "--strict"); err == nil {
		t.Errorf("verify --strict passes a log with quarantined entries:\n%s", out)
	}
	if out := mustCLI(t, nil, "audit", "query", "--data", dir, "--action", "audit.repair"); strings.Count(out, "audit.repair") != 1 {
		t.Fatalf("the repair is not one entry of the log:\n%s", out)
	}
}
