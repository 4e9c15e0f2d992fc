package detect

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/rampartsec/rampart/internal/audit"
)

// benchEntries is a realistic mix: mostly allowed decisions among 50
// callers and 20 services, some denials, some SVID issuance.
func benchEntries(n int) []*audit.Entry {
	out := make([]*audit.Entry, n)
	for i := range out {
		at := time.Duration(i) * 100 * time.Microsecond
		caller := fmt.Sprintf("spiffe://example.org/svc-%d", i%50)
		target := fmt.Sprintf("spiffe://example.org/svc-%d", i%20)
		switch {
		case i%100 == 0:
			out[i] = &audit.Entry{V: 1, Time: t0.Add(at), Actor: audit.Actor{SpiffeID: "spiffe://example.org/rampart/agent/n1"}, Action: "svid.issue",
				Target: caller, Outcome: "success", Details: map[string]string{"serial": "abc"}}
		case i%10 == 0:
			out[i] = decision(at, caller, target, "POST", "denied")
		default:
			out[i] = decision(at, caller, target, "GET", "success")
		}
	}
	return out
}

func BenchmarkDetectDefaultRules(b *testing.B) {
	es := benchEntries(100000)
	e := NewEngine(Default())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Process(int64(i), es[i%len(es)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// With decoding, as the server's tailer and rampart detect test run it.
func BenchmarkDetectDefaultRulesDecode(b *testing.B) {
	es := benchEntries(10000)
	raw := make([][]byte, len(es))
	for i, e := range es {
		raw[i], _ = e.Marshal()
	}
	e := NewEngine(Default())
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var en audit.Entry
		if err := json.Unmarshal(raw[i%len(raw)], &en); err != nil {
			b.Fatal(err)
		}
		e.Process(int64(i), &en)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}
