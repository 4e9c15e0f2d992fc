package policy

import (
	"fmt"
	"strings"
)

type segKind uint8

const (
	segLit   segKind = iota
	segParam         // {name}: one non-empty segment
	segRest          // trailing *: the prefix and anything below
)

type seg struct {
	kind segKind
	lit  string // literal, or the parameter's name
}

// pathPattern is a compiled path pattern.
type pathPattern struct {
	segs        []seg
	trailing    bool // pattern ends in "/" (exact patterns only)
	root        bool // the pattern "/"
	source      string
	paramsCount int
}

func compilePath(p string) (pathPattern, error) {
	if !strings.HasPrefix(p, "/") {
		return pathPattern{}, fmt.Errorf("%q: must start with /", p)
	}
	if strings.Contains(p, "//") {
		return pathPattern{}, fmt.Errorf("%q: empty segment", p)
	}
	pp := pathPattern{source: p}
	if p == "/" {
		pp.root = true
		return pp, nil
	}
	body := p[1:]
	if strings.HasSuffix(body, "/") {
		pp.trailing = true
		body = body[:len(body)-1]
	}
	parts := strings.Split(body, "/")
	names := map[string]bool{}
	for i, s := range parts {
		switch {
		case s == "." || s == "..":
			return pathPattern{}, fmt.Errorf("%q: \".\" and \"..\" segments are not allowed", p)
		case s == "*":
			if i != len(parts)-1 || pp.trailing {
				return pathPattern{}, fmt.Errorf("%q: \"*\" is only allowed as the whole last segment", p)
			}
			pp.segs = append(pp.segs, seg{kind: segRest})
		case strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}"):
			name := s[1 : len(s)-1]
			if !paramRE.MatchString(name) {
				return pathPattern{}, fmt.Errorf("%q: parameter name %q is not an identifier", p, name)
			}
			if names[name] {
				return pathPattern{}, fmt.Errorf("%q: parameter %q used twice", p, name)
			}
			names[name] = true
			pp.segs = append(pp.segs, seg{kind: segParam, lit: name})
			pp.paramsCount++
		case strings.ContainsAny(s, "{}*"):
			return pathPattern{}, fmt.Errorf("%q: segment %q mixes literal text with {} or *", p, s)
		default:
			pp.segs = append(pp.segs, seg{kind: segLit, lit: s})
		}
	}
	return pp, nil
}

// match reports whether path (normalised) matches, without allocating. If
// bind is not nil it receives the parameters.
func (pp *pathPattern) match(path string, bind func(name, value string)) bool {
	if path == "" || path[0] != '/' {
		return false
	}
	if pp.root {
		return path == "/"
	}
	rest := path[1:]
	for i, s := range pp.segs {
		if s.kind == segRest {
			// "/api/*" matches "/api", "/api/" and anything below.
			return true
		}
		var cur string
		j := strings.IndexByte(rest, '/')
		if j < 0 {
			cur, rest = rest, ""
		} else {
			cur, rest = rest[:j], rest[j+1:]
		}
		last := i == len(pp.segs)-1
		switch s.kind {
		case segLit:
			if cur != s.lit {
				return false
			}
		case segParam:
			if cur == "" {
				return false
			}
			if bind != nil {
				bind(s.lit, cur)
			}
		}
		if last {
			// The pattern ends here: so must the path (or its trailing slash).
			if j < 0 {
				return !pp.trailing
			}
			return pp.trailing && rest == ""
		}
		if j < 0 {
			// Path ended but the pattern goes on; only a following "*" matches.
			return len(pp.segs) == i+2 && pp.segs[i+1].kind == segRest
		}
	}
	return false
}

// methodBit maps a method to a bit of the mask; 0 for unknown.
func methodBit(m string) uint16 {
	switch m {
	case "GET":
		return 1 << 0
	case "HEAD":
		return 1 << 1
	case "POST":
		return 1 << 2
	case "PUT":
		return 1 << 3
	case "PATCH":
		return 1 << 4
	case "DELETE":
		return 1 << 5
	case "OPTIONS":
		return 1 << 6
	case "CONNECT":
		return 1 << 7
	case "TRACE":
		return 1 << 8
	}
	return 0
}
