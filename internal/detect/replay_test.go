package detect

import (
	"strings"
	"testing"
)

func TestReplay(t *testing.T) {
	line := func(sec, src string) string {
		return `{"v":1,"time":"2026-01-01T10:00:0` + sec + `Z","actor":{"user":"anonymous"},"action":"oauth.login","outcome":"failure","source":"` + src + `","details":{"username":"alice"}}`
	}
	var log strings.Builder
	for _, s := range []string{"1", "2", "3", "4"} {
		log.WriteString(line(s, "oauth") + "\n\n")
	}
	log.WriteString(`{"index":41,` + line("5", "oauth")[1:] + "\n")

	r := NewReplay(Default())
	if err := r.ReadJSONLines("log.jsonl", strings.NewReader(log.String())); err != nil {
		t.Fatal(err)
	}
	as := r.Alerts()
	if r.Entries() != 5 || len(as) != 1 || as[0].Rule != "login-failures" || as[0].FirstIndex != 41 {
		t.Fatalf("%d entries, alerts %+v; want 5 entries and one login-failures alert at the line's index 41", r.Entries(), as)
	}
	if p := r.Check([]string{"login-failures"}, []string{"denied-burst"}); len(p) != 0 {
		t.Fatalf("Check: %v", p)
	}
	if p := r.Check([]string{"denied-burst"}, []string{"login-failures"}); len(p) != 2 ||
		p[0] != "rule denied-burst raised no alert" || p[1] != "rule login-failures raised 1 alert(s)" {
		t.Fatalf("Check: %q", p)
	}

	for _, tc := range []struct{ log, want string }{
		{line("1", "oauth") + "\ngarbage\n", "log.jsonl:2: invalid character"},
		{`{"v":1,"time":"2026-01-01T10:00:01Z","actor":{},"action":"oauth.login","outcome":"failure"}`, "log.jsonl:1: audit: entry: actor needs"},
		{`{"v":1,"time":"2026-01-01T10:00:01Z","actor":{"user":"a"},"action":"Login","outcome":"failure"}`, `log.jsonl:1: audit: entry: action "Login"`},
	} {
		err := NewReplay(Default()).ReadJSONLines("log.jsonl", strings.NewReader(tc.log))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.log, err, tc.want)
		}
	}
	if !Default().HasRule("denied-burst") || Default().HasRule("no-such-rule") {
		t.Error("HasRule")
	}
}
