package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Formats Export writes.
const (
	FormatJSONLines = "jsonl"   // one canonical entry per line, with its index
	FormatSyslog    = "syslog"  // RFC 5424, one message per line (octet-counting-free, for files and UDP/TCP LF framing)
	FormatESBulk    = "es-bulk" // Elasticsearch / OpenSearch _bulk body
)

// Exporter writes entries in one of the formats.
type Exporter struct {
	W      io.Writer
	Format string
	// Hostname goes into syslog's HOSTNAME field ("-" when empty).
	Hostname string
	// Index is the Elasticsearch index name (default "rampart-audit").
	Index string
	// Origin names the log; with the entry index it makes the document ID,
	// so exporting twice does not duplicate documents.
	Origin string
}

// exported is an entry with its position in the log.
type exported struct {
	Index int64 `json:"index"`
	*Entry
}

// esDoc adds the field Kibana and OpenSearch Dashboards key time on.
type esDoc struct {
	Timestamp time.Time `json:"@timestamp"`
	Index     int64     `json:"log_index"`
	*Entry
}

// Write exports entry e found at index i.
func (x *Exporter) Write(i int64, e *Entry) error {
	var b []byte
	var err error
	switch x.Format {
	case FormatJSONLines, "":
		b, err = json.Marshal(exported{Index: i, Entry: e})
		b = append(b, '\n')
	case FormatSyslog:
		b, err = x.syslog(i, e)
	case FormatESBulk:
		idx := x.Index
		if idx == "" {
			idx = "rampart-audit"
		}
		meta, _ := json.Marshal(map[string]map[string]string{"index": {"_index": idx, "_id": x.Origin + "/" + strconv.FormatInt(i, 10)}})
		var doc []byte
		doc, err = json.Marshal(esDoc{Timestamp: e.Time.UTC(), Index: i, Entry: e})
		b = append(append(append(meta, '\n'), doc...), '\n')
	default:
		return fmt.Errorf("audit: export format %q: want jsonl, syslog or es-bulk", x.Format)
	}
	if err != nil {
		return fmt.Errorf("audit: export entry %d: %w", i, err)
	}
	_, err = x.W.Write(b)
	return err
}

// syslogPEN is the private enterprise number for structured data IDs;
// 32473 is the one RFC 5612 reserves for documentation and examples, until
// the project registers its own.
const syslogPEN = "32473"

// syslog formats an RFC 5424 message: facility 13 (log audit), severity
// informational for successes and warning otherwise; MSGID is the action,
// structured data carries the key fields, MSG the entry as JSON.
func (x *Exporter) syslog(i int64, e *Entry) ([]byte, error) {
	sev := 6
	if e.Outcome != OutcomeSuccess {
		sev = 4
	}
	host := x.Hostname
	if host == "" {
		host = "-"
	}
	msg, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "<%d>1 %s %s rampart - %s [audit@%s index=\"%d\"", 13*8+sev, e.Time.UTC().Format("2006-01-02T15:04:05.000000Z"),
		printUSASCII(host, 255), printUSASCII(e.Action, 32), syslogPEN, i)
	for _, kv := range [][2]string{{"outcome", e.Outcome}, {"actor", e.Actor.SpiffeID}, {"user", e.Actor.User}, {"target", e.Target}, {"source", e.Source}} {
		if kv[1] != "" {
			fmt.Fprintf(&sb, " %s=\"%s\"", kv[0], sdEscape(kv[1]))
		}
	}
	sb.WriteString("] \xef\xbb\xbf") // BOM: MSG is UTF-8
	sb.Write(msg)
	sb.WriteByte('\n')
	return []byte(sb.String()), nil
}

// printUSASCII keeps a header field within RFC 5424's PRINTUSASCII and
// length limit ("-" if nothing is left).
func printUSASCII(s string, max int) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(b) < max; i++ {
		if c := s[i]; c >= 33 && c <= 126 {
			b = append(b, c)
		}
	}
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

// sdEscape escapes a structured-data parameter value (RFC 5424 6.3.3).
func sdEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`, "\n", " ").Replace(s)
}
