package registration

import (
	"fmt"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rampartsec/rampart/internal/yamlfields"
)

// FileEntry is one entry of an entry file: an ID (to update or delete)
// and the entry as asked for.
type FileEntry struct {
	ID   string
	Spec EntrySpec
}

// MaxEntryFile bounds an entry file (16 MiB, the batch API's limit).
const MaxEntryFile = 16 << 20

// entryFields are the fields of one entry: ours, and SPIRE's names for the
// same things (spire-server entry create -data), so a SPIRE export loads
// as it is.
var entryFields = []string{
	"id", "entry_id", "spiffe_id", "parent_id", "selectors", "dns_names", "admin", "downstream", "hint", "expires_at", "federates_with",
	"x509_ttl", "x509_ttl_seconds", "x509_svid_ttl", "jwt_ttl", "jwt_ttl_seconds", "jwt_svid_ttl",
	// Read and ignored, so that what entry list --json prints (and a
	// SPIRE export) is a file: the server keeps its own.
	"created_at",
}

// ParseEntryFile reads many entries from JSON or YAML (JSON is YAML): a
// list of entries, or a mapping with "entries" (SPIRE's form). Unknown and
// repeated fields are errors naming the line and entries[i].field. Per
// entry:
//
//	id                                    the entry to update or delete
//	spiffe_id, parent_id                  SPIFFE IDs
//	selectors                             "unix:uid:1000", or SPIRE's {type: unix, value: "uid:1000"}
//	x509_ttl, jwt_ttl                     durations ("1h", "5m"); or x509_ttl_seconds, x509_svid_ttl (seconds)
//	dns_names                             list of DNS names
//	federates_with                        list of trust domains ("example.com" or "spiffe://example.com")
//	admin, downstream                     booleans
//	hint                                  string
//	expires_at                            RFC 3339 time, or Unix seconds (SPIRE)
//
// What the values mean is checked by the server (NewEntries); this checks
// only their form.
func ParseEntryFile(b []byte) ([]FileEntry, error) {
	if len(b) > MaxEntryFile {
		return nil, fmt.Errorf("registration: entry file larger than %d bytes", MaxEntryFile)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("registration: entry file: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, fmt.Errorf("registration: entry file: want a list of entries or a mapping with \"entries\"")
	}
	list := doc.Content[0]
	if list.Kind == yaml.MappingNode {
		m, err := yamlfields.Map(list, "file", "entries")
		if err != nil {
			return nil, fmt.Errorf("registration: entry file: %w", err)
		}
		if list = m["entries"]; list == nil {
			return nil, fmt.Errorf("registration: entry file: line %d: no \"entries\"", doc.Content[0].Line)
		}
	}
	if list.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("registration: entry file: line %d: want a list of entries", list.Line)
	}
	if len(list.Content) > MaxBatch {
		return nil, fmt.Errorf("registration: entry file: %d entries; at most %d per batch", len(list.Content), MaxBatch)
	}
	out := make([]FileEntry, 0, len(list.Content))
	for i, n := range list.Content {
		fe, err := parseFileEntry(n, fmt.Sprintf("entries[%d]", i))
		if err != nil {
			return nil, fmt.Errorf("registration: entry file: %w", err)
		}
		out = append(out, fe)
	}
	return out, nil
}

func parseFileEntry(n *yaml.Node, where string) (FileEntry, error) {
	m, err := yamlfields.Map(n, where, entryFields...)
	if err != nil {
		return FileEntry{}, err
	}
	var fe FileEntry
	s := &fe.Spec
	field := func(k string) string { return where + "." + k }
	for k, v := range m {
		switch k {
		case "created_at":
		case "id", "entry_id":
			if fe.ID != "" {
				return fe, yamlfields.At(v, field(k), "give id or entry_id, not both")
			}
			fe.ID, err = scalar(v, field(k))
		case "spiffe_id":
			s.SpiffeID, err = scalar(v, field(k))
		case "parent_id":
			s.ParentID, err = scalar(v, field(k))
		case "hint":
			s.Hint, err = scalar(v, field(k))
		case "selectors":
			s.Selectors, err = selectors(v, field(k))
		case "dns_names":
			s.DNSNames, err = stringList(v, field(k))
		case "federates_with":
			s.FederatesWith, err = stringList(v, field(k))
		case "admin":
			s.Admin, err = boolean(v, field(k))
		case "downstream":
			s.Downstream, err = boolean(v, field(k))
		case "expires_at":
			s.ExpiresAt, err = timestamp(v, field(k))
		case "x509_ttl", "x509_ttl_seconds", "x509_svid_ttl":
			if s.X509TTLSeconds != 0 {
				return fe, yamlfields.At(v, field(k), "the X.509 TTL is given twice")
			}
			s.X509TTLSeconds, err = ttl(v, field(k), k == "x509_ttl")
		case "jwt_ttl", "jwt_ttl_seconds", "jwt_svid_ttl":
			if s.JWTTTLSeconds != 0 {
				return fe, yamlfields.At(v, field(k), "the JWT TTL is given twice")
			}
			s.JWTTTLSeconds, err = ttl(v, field(k), k == "jwt_ttl")
		}
		if err != nil {
			return fe, err
		}
	}
	return fe, nil
}

func scalar(n *yaml.Node, where string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", yamlfields.At(n, where, "want a string")
	}
	return n.Value, nil
}

func stringList(n *yaml.Node, where string) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, yamlfields.At(n, where, "want a list of strings")
	}
	out := make([]string, 0, len(n.Content))
	for i, c := range n.Content {
		v, err := scalar(c, fmt.Sprintf("%s[%d]", where, i))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// selectors takes "type:value" strings, or SPIRE's {type, value} objects.
func selectors(n *yaml.Node, where string) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, yamlfields.At(n, where, "want a list of selectors")
	}
	out := make([]string, 0, len(n.Content))
	for i, c := range n.Content {
		w := fmt.Sprintf("%s[%d]", where, i)
		if c.Kind == yaml.MappingNode {
			m, err := yamlfields.Map(c, w, "type", "value")
			if err != nil {
				return nil, err
			}
			if m["type"] == nil || m["value"] == nil {
				return nil, yamlfields.At(c, w, "a selector object needs type and value")
			}
			t, err := scalar(m["type"], w+".type")
			if err != nil {
				return nil, err
			}
			v, err := scalar(m["value"], w+".value")
			if err != nil {
				return nil, err
			}
			out = append(out, t+":"+v)
			continue
		}
		v, err := scalar(c, w)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func boolean(n *yaml.Node, where string) (bool, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		return false, yamlfields.At(n, where, "want true or false")
	}
	return n.Value == "true", nil
}

// ttl reads a duration ("1h"; when text) or whole seconds.
func ttl(n *yaml.Node, where string, text bool) (int64, error) {
	if n.Kind != yaml.ScalarNode {
		return 0, yamlfields.At(n, where, "want a duration")
	}
	if text {
		d, err := time.ParseDuration(n.Value)
		if err != nil || d < time.Second || d%time.Second != 0 {
			return 0, yamlfields.At(n, where, "want a duration of whole seconds, at least 1s, such as 1h or 90s")
		}
		return int64(d / time.Second), nil
	}
	v, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil || v < 0 {
		return 0, yamlfields.At(n, where, "want whole seconds (0 for the default)")
	}
	return v, nil
}

// timestamp reads RFC 3339, or Unix seconds as SPIRE writes them (0: never).
func timestamp(n *yaml.Node, where string) (time.Time, error) {
	if n.Kind != yaml.ScalarNode {
		return time.Time{}, yamlfields.At(n, where, "want an RFC 3339 time")
	}
	if n.Tag == "!!int" {
		v, err := strconv.ParseInt(n.Value, 10, 64)
		if err != nil || v < 0 || v > 1<<40 {
			return time.Time{}, yamlfields.At(n, where, "want Unix seconds")
		}
		if v == 0 {
			return time.Time{}, nil
		}
		return time.Unix(v, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, n.Value)
	if err != nil {
		return time.Time{}, yamlfields.At(n, where, "want an RFC 3339 time, such as 2027-01-31T00:00:00Z")
	}
	return t.UTC(), nil
}
