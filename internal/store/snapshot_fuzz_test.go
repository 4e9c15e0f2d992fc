package store

import (
	"bytes"
	"testing"
)

// FuzzDumpRow: a row line of a dump (read back from a backup) is parsed
// without panicking, values only of their column's type, and a parsed row
// has one value per column.
func FuzzDumpRow(f *testing.F) {
	cols := [][2]string{{"id", "text"}, {"key", "bytes"}, {"n", "int"}, {"on", "bool"}}
	f.Add([]byte(`["a","AQID",42,true]`))
	f.Add([]byte(`[null,null,null,null]`))
	f.Add([]byte(`["a","AQID",1e3,true]`))
	f.Add([]byte(`["a","AQID",9223372036854775808,false]`))
	f.Add([]byte(`["a","not base64!",1,true] []`))
	f.Fuzz(func(t *testing.T, line []byte) {
		row, err := parseRow(line, cols)
		if err != nil {
			return
		}
		if len(row) != len(cols) {
			t.Fatalf("%d values for %d columns", len(row), len(cols))
		}
		for i, v := range row {
			switch v.(type) {
			case nil, string, []byte, int64, bool:
			default:
				t.Fatalf("column %d: a %T", i, v)
			}
		}
		r := newDumpReader(bytes.NewReader(append(line, '\n')))
		if _, err := r.line(); err != nil {
			t.Fatal(err)
		}
	})
}
