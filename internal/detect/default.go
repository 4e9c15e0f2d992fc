package detect

import _ "embed"

//go:embed default.yaml
var defaultRules []byte

// DefaultRules returns the source of the default rule set.
func DefaultRules() []byte { return defaultRules }

// Default returns the default rule set, parsed.
func Default() *RuleSet {
	rs, err := Parse(defaultRules)
	if err != nil {
		panic("detect: the embedded default rules do not parse: " + err.Error())
	}
	return rs
}
