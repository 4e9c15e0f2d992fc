package osv

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// Level is a severity rating, ordered.
type Level int

// Severity levels. Unknown is a record that rates nothing (the Go database
// rates no record); where a threshold is compared, callers decide what an
// unknown severity counts as (see scan.Threshold).
const (
	Unknown Level = iota
	None
	Low
	Medium
	High
	Critical
)

var levelNames = []string{"UNKNOWN", "NONE", "LOW", "MEDIUM", "HIGH", "CRITICAL"}

func (l Level) String() string {
	if l < 0 || int(l) >= len(levelNames) {
		return "UNKNOWN"
	}
	return levelNames[l]
}

// ParseLevel reads a level name, case-insensitively ("moderate" is MEDIUM,
// as GitHub says it).
func ParseLevel(s string) (Level, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if u == "MODERATE" {
		return Medium, nil
	}
	for i, n := range levelNames {
		if n == u {
			return Level(i), nil
		}
	}
	return Unknown, fmt.Errorf("osv: unknown severity %q (want one of LOW, MEDIUM, HIGH, CRITICAL)", s)
}

// MarshalText writes the level's name.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText reads a level's name.
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// Rating is a record's severity and where it comes from.
type Rating struct {
	Level  Level   `json:"level"`
	Score  float64 `json:"score,omitempty"`  // CVSS base score, when computed
	Vector string  `json:"vector,omitempty"` // the CVSS vector it was computed from
}

// Rate returns the highest severity the record (or one of its affected
// entries) states: a CVSS v3 vector's base score, or else a rating in
// database_specific.severity (GitHub's advisories, Ubuntu's), or else
// Unknown.
func (r *Record) Rate() Rating {
	best := Rating{}
	consider := func(sevs []Severity) {
		for _, s := range sevs {
			if !strings.HasPrefix(s.Type, "CVSS_V3") {
				if s.Type == "Ubuntu" {
					if l, err := ParseLevel(s.Score); err == nil && l > best.Level {
						best = Rating{Level: l}
					}
				}
				continue
			}
			score, err := CVSS3BaseScore(s.Score)
			if err != nil {
				continue
			}
			if l := scoreLevel(score); l > best.Level || (l == best.Level && score > best.Score) {
				best = Rating{Level: l, Score: score, Vector: s.Score}
			}
		}
	}
	consider(r.Severity)
	for i := range r.Affected {
		consider(r.Affected[i].Severity)
	}
	if best.Level == Unknown {
		for _, raw := range append([]json.RawMessage{r.DatabaseSpecific}, affectedDBSpecific(r)...) {
			var ds struct {
				Severity string `json:"severity"`
			}
			if len(raw) > 0 && json.Unmarshal(raw, &ds) == nil && ds.Severity != "" {
				if l, err := ParseLevel(ds.Severity); err == nil && l > best.Level {
					best = Rating{Level: l}
				}
			}
		}
	}
	return best
}

func affectedDBSpecific(r *Record) []json.RawMessage {
	var out []json.RawMessage
	for i := range r.Affected {
		out = append(out, r.Affected[i].DatabaseSpecific)
	}
	return out
}

func scoreLevel(s float64) Level {
	switch {
	case s == 0:
		return None
	case s < 4:
		return Low
	case s < 7:
		return Medium
	case s < 9:
		return High
	}
	return Critical
}

// CVSS3BaseScore computes the base score of a CVSS 3.0 or 3.1 vector
// (CVSS v3.1 specification, section 7.1).
func CVSS3BaseScore(vector string) (float64, error) {
	parts := strings.Split(vector, "/")
	if len(parts) < 9 || (parts[0] != "CVSS:3.1" && parts[0] != "CVSS:3.0") {
		return 0, fmt.Errorf("osv: %q is not a CVSS v3 vector", vector)
	}
	m := map[string]string{}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, ":")
		if !ok {
			return 0, fmt.Errorf("osv: CVSS vector %q: malformed metric %q", vector, p)
		}
		m[k] = v
	}
	weights := map[string]map[string]float64{
		"AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
		"AC": {"L": 0.77, "H": 0.44},
		"UI": {"N": 0.85, "R": 0.62},
		"C":  {"H": 0.56, "L": 0.22, "N": 0},
		"I":  {"H": 0.56, "L": 0.22, "N": 0},
		"A":  {"H": 0.56, "L": 0.22, "N": 0},
	}
	w := map[string]float64{}
	for k, table := range weights {
		v, ok := table[m[k]]
		if !ok {
			return 0, fmt.Errorf("osv: CVSS vector %q: metric %s is %q", vector, k, m[k])
		}
		w[k] = v
	}
	changed := false
	switch m["S"] {
	case "U":
	case "C":
		changed = true
	default:
		return 0, fmt.Errorf("osv: CVSS vector %q: metric S is %q", vector, m["S"])
	}
	var pr float64
	switch m["PR"] {
	case "N":
		pr = 0.85
	case "L":
		pr = 0.62
		if changed {
			pr = 0.68
		}
	case "H":
		pr = 0.27
		if changed {
			pr = 0.5
		}
	default:
		return 0, fmt.Errorf("osv: CVSS vector %q: metric PR is %q", vector, m["PR"])
	}
	iss := 1 - (1-w["C"])*(1-w["I"])*(1-w["A"])
	var impact float64
	if changed {
		impact = 7.52*(iss-0.029) - 3.25*math.Pow(iss-0.02, 15)
	} else {
		impact = 6.42 * iss
	}
	if impact <= 0 {
		return 0, nil
	}
	expl := 8.22 * w["AV"] * w["AC"] * pr * w["UI"]
	if changed {
		return roundUp(math.Min(1.08*(impact+expl), 10)), nil
	}
	return roundUp(math.Min(impact+expl, 10)), nil
}

// roundUp is the specification's Roundup (Appendix A), free of
// floating-point surprises.
func roundUp(x float64) float64 {
	i := int64(math.Round(x * 100000))
	if i%10000 == 0 {
		return float64(i) / 100000
	}
	return float64(i/10000+1) / 10
}
