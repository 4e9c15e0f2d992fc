package detect

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
)

// Replay runs rules over a recorded log, in order, the way the server's
// tailer runs them over the live one: "rampart detect test" uses it so
// that teams test their rules in CI against logs they exported.
type Replay struct {
	eng     *Engine
	rules   int
	alerts  map[string]store.Alert
	order   []string
	entries int64
}

// NewReplay returns a replay of rs over no entries yet.
func NewReplay(rs *RuleSet) *Replay {
	return &Replay{eng: NewEngine(rs), rules: len(rs.Rules), alerts: map[string]store.Alert{}}
}

// Add processes the entry at log index i.
func (r *Replay) Add(i int64, e *audit.Entry) {
	for _, a := range r.eng.Process(i, e) {
		if _, ok := r.alerts[a.ID]; !ok {
			r.order = append(r.order, a.ID)
		}
		r.alerts[a.ID] = a
	}
	r.entries++
}

// ReadJSONLines adds the entries of a JSON-lines log (what "rampart audit
// export --format jsonl" writes: one entry per line, with an optional
// "index"); name is used in errors, which give the line number.
func (r *Replay) ReadJSONLines(name string, rd io.Reader) error {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 0, 1<<16), audit.MaxEntrySize+64)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 || isSpace(sc.Bytes()) {
			continue
		}
		var e struct {
			Index *int64 `json:"index"`
			audit.Entry
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("%s:%d: %w", name, line, err)
		}
		if err := e.Entry.Validate(); err != nil {
			return fmt.Errorf("%s:%d: %w", name, line, err)
		}
		i := r.entries
		if e.Index != nil {
			i = *e.Index
		}
		r.Add(i, &e.Entry)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func isSpace(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// ScanLog adds every entry of the audit log in dir (a server's DATA/audit,
// or a copy fetched from the archive).
func (r *Replay) ScanLog(dir string) error {
	return audit.Scan(dir, 0, func(i int64, raw []byte) error {
		var e audit.Entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("detect: entry %d: %w", i, err)
		}
		r.Add(i, &e)
		return nil
	})
}

// Alerts returns the alerts raised, in the order they were first raised,
// each as it stood at the end.
func (r *Replay) Alerts() []store.Alert {
	out := make([]store.Alert, len(r.order))
	for i, id := range r.order {
		out[i] = r.alerts[id]
	}
	return out
}

// Entries returns how many entries were replayed; Rules how many rules ran.
func (r *Replay) Entries() int64 { return r.entries }

// Rules returns how many rules ran.
func (r *Replay) Rules() int { return r.rules }

// Check returns what went against expectations: a rule of fires that raised
// no alert, a rule of quiet that raised one.
func (r *Replay) Check(fires, quiet []string) []string {
	fired := map[string]int{}
	for _, a := range r.alerts {
		fired[a.Rule]++
	}
	var problems []string
	for _, name := range fires {
		if fired[name] == 0 {
			problems = append(problems, "rule "+name+" raised no alert")
		}
	}
	for _, name := range quiet {
		if fired[name] > 0 {
			problems = append(problems, fmt.Sprintf("rule %s raised %d alert(s)", name, fired[name]))
		}
	}
	return problems
}

// HasRule reports whether rs has a rule of that name.
func (rs *RuleSet) HasRule(name string) bool {
	return slices.ContainsFunc(rs.Rules, func(r *Rule) bool { return r.Name == name })
}
