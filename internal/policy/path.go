package policy

import (
	"fmt"
	"strings"
)

// NormalizePath normalises a raw (still percent-encoded) request path:
// escapes of unreserved characters are decoded, other escapes get upper-case
// hex, "." and ".." segments (also encoded) are resolved, duplicate slashes
// collapse, and a trailing slash is kept. Ambiguous paths are refused.
func NormalizePath(raw string) (string, error) {
	if raw == "" || raw[0] != '/' {
		return "", fmt.Errorf("policy: path %q: must start with /", raw)
	}
	var b strings.Builder
	b.Grow(len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == '%':
			if i+2 >= len(raw) {
				return "", fmt.Errorf("policy: path %q: truncated percent-escape", raw)
			}
			v, ok := unhex(raw[i+1], raw[i+2])
			if !ok {
				return "", fmt.Errorf("policy: path %q: invalid percent-escape %q", raw, raw[i:i+3])
			}
			switch {
			case v == '/' || v == '\\':
				return "", fmt.Errorf("policy: path %q: encoded %q is ambiguous", raw, string(v))
			case v < 0x20 || v == 0x7f:
				return "", fmt.Errorf("policy: path %q: encoded control character", raw)
			case unreserved(v):
				b.WriteByte(v)
			default:
				b.WriteByte('%')
				b.WriteByte(upperHex[v>>4])
				b.WriteByte(upperHex[v&15])
			}
			i += 2
		case c == '\\':
			return "", fmt.Errorf("policy: path %q: backslash is ambiguous", raw)
		case c == ';':
			// Servlet containers and Spring strip path parameters before
			// routing ("/admin;x" is /admin, "/public/..;/admin" is /admin),
			// so the path judged would not be the path served.
			return "", fmt.Errorf("policy: path %q: ';' path parameters are ambiguous (servlet containers strip them)", raw)
		case c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("policy: path %q: control character", raw)
		default:
			b.WriteByte(c)
		}
	}
	decoded := b.String()
	// Resolve segments.
	trailing := strings.HasSuffix(decoded, "/") && len(decoded) > 1
	var out []string
	for seg := range strings.SplitSeq(decoded, "/") {
		switch seg {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return "", fmt.Errorf("policy: path %q: \"..\" above the root", raw)
			}
			out = out[:len(out)-1]
		default:
			out = append(out, seg)
		}
	}
	last := ""
	if n := len(decoded); n > 0 {
		// "/a/." and "/a/.." end in a directory: keep the slash.
		i := strings.LastIndexByte(decoded, '/')
		last = decoded[i+1:]
	}
	res := "/" + strings.Join(out, "/")
	if (trailing || last == "." || last == "..") && res != "/" {
		res += "/"
	}
	return res, nil
}

const upperHex = "0123456789ABCDEF"

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func unhex(a, b byte) (byte, bool) {
	h := func(c byte) (byte, bool) {
		switch {
		case '0' <= c && c <= '9':
			return c - '0', true
		case 'A' <= c && c <= 'F':
			return c - 'A' + 10, true
		case 'a' <= c && c <= 'f':
			return c - 'a' + 10, true
		}
		return 0, false
	}
	x, ok1 := h(a)
	y, ok2 := h(b)
	return x<<4 | y, ok1 && ok2
}
