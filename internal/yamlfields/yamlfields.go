package yamlfields

import (
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error names where a document is wrong.
type Error struct {
	Line  int
	Where string // the field path, e.g. rules[2].name
	Msg   string
}

func (e *Error) Error() string { return fmt.Sprintf("line %d: %s: %s", e.Line, e.Where, e.Msg) }

// At returns an Error for node n.
func At(n *yaml.Node, where, format string, a ...any) *Error {
	return &Error{Line: n.Line, Where: where, Msg: fmt.Sprintf(format, a...)}
}

// Map checks that n is a mapping with only the allowed keys, each once, and
// returns key -> value nodes.
func Map(n *yaml.Node, where string, allowed ...string) (map[string]*yaml.Node, error) {
	if n.Kind != yaml.MappingNode {
		return nil, At(n, where, "want a mapping")
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !slices.Contains(allowed, k.Value) {
			return nil, At(k, where, "unknown field %q (want one of %s)", k.Value, strings.Join(allowed, ", "))
		}
		if _, dup := out[k.Value]; dup {
			return nil, At(k, where, "field %q given twice", k.Value)
		}
		out[k.Value] = v
	}
	return out, nil
}
