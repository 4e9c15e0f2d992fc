package policy

import (
	"bytes"
	"fmt"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"
)

// TestFile is a set of policy unit tests (rampart policy test).
//
//	tests:
//	  - name: orders may read a payment
//	    request: {caller: spiffe://example.org/orders, method: GET, path: /payments/42,
//	              headers: {x-tenant: a}, user: {sub: alice}}
//	    expect: allow        # or deny
//	    rule: orders-reads   # optional: the rule that must decide
type TestFile struct {
	Tests []TestCase `yaml:"tests"`
}

// TestCase is one policy unit test.
type TestCase struct {
	Name    string      `yaml:"name"`
	Request TestRequest `yaml:"request"`
	Expect  string      `yaml:"expect"`
	Rule    *string     `yaml:"rule"`
}

// TestRequest is a request in a TestCase.
type TestRequest struct {
	Caller  string            `yaml:"caller"`
	Method  string            `yaml:"method"`
	Path    string            `yaml:"path"`
	Headers map[string]string `yaml:"headers"`
	User    map[string]any    `yaml:"user"`
}

// TestResult is the outcome of one TestCase.
type TestResult struct {
	Name    string
	Passed  bool
	Message string
}

// ParseTests parses a test file strictly.
func ParseTests(src []byte) (*TestFile, error) {
	var tf TestFile
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&tf); err != nil {
		return nil, fmt.Errorf("policy: tests: %v", cleanYAMLError(err))
	}
	if len(tf.Tests) == 0 {
		return nil, fmt.Errorf("policy: tests: no tests")
	}
	for i, tc := range tf.Tests {
		if tc.Name == "" {
			return nil, fmt.Errorf("policy: tests[%d]: name is required", i)
		}
		if tc.Expect != "allow" && tc.Expect != "deny" {
			return nil, fmt.Errorf("policy: tests[%d] %q: expect: %q, want allow or deny", i, tc.Name, tc.Expect)
		}
		if _, err := spiffeid.FromString(tc.Request.Caller); err != nil {
			return nil, fmt.Errorf("policy: tests[%d] %q: request.caller: %v", i, tc.Name, err)
		}
	}
	return &tf, nil
}

// RunTests runs every test against eng. A dry-run policy is judged by what
// it would have decided.
func RunTests(eng *Engine, tf *TestFile) []TestResult {
	var out []TestResult
	for _, tc := range tf.Tests {
		res := TestResult{Name: tc.Name}
		path, err := NormalizePath(orSlash(tc.Request.Path))
		if err != nil {
			res.Passed = tc.Expect == "deny"
			res.Message = "path refused before the policy: " + err.Error()
			out = append(out, res)
			continue
		}
		h := http.Header{}
		for k, v := range tc.Request.Headers {
			h.Set(k, v)
		}
		method := tc.Request.Method
		if method == "" {
			method = "GET"
		}
		r := &Request{Caller: spiffeid.RequireFromString(tc.Request.Caller), Method: method, Path: path, Headers: h, User: tc.Request.User}
		d := eng.Decide(r)
		got := "deny"
		if d.Allowed && !d.DryRunDenied {
			got = "allow"
		}
		rule := d.Rule
		switch {
		case got != tc.Expect:
			res.Message = fmt.Sprintf("got %s (rule %q), want %s", got, rule, tc.Expect)
		case tc.Rule != nil && *tc.Rule != rule:
			res.Message = fmt.Sprintf("decided by rule %q, want %q", rule, *tc.Rule)
		default:
			res.Passed = true
		}
		out = append(out, res)
	}
	return out
}

func orSlash(p string) string {
	if p == "" {
		return "/"
	}
	return p
}
