package netpol

import (
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func parseIDOrZero(s string) spiffeid.ID {
	id, _ := spiffeid.FromString(s)
	return id
}

func isAppComment(c string) bool { return strings.HasSuffix(c, " (application)") }
