package acme

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// ACME error types (RFC 8555 §6.7, RFC 9773 §7.4, draft-ietf-acme-profiles
// §6): the last part of urn:ietf:params:acme:error:TYPE.
const (
	errAccountDoesNotExist     = "accountDoesNotExist"
	errAlreadyReplaced         = "alreadyReplaced"
	errAlreadyRevoked          = "alreadyRevoked"
	errBadCSR                  = "badCSR"
	errBadNonce                = "badNonce"
	errBadPublicKey            = "badPublicKey"
	errBadRevocationReason     = "badRevocationReason"
	errBadSignatureAlgorithm   = "badSignatureAlgorithm"
	errConnection              = "connection"
	errDNS                     = "dns"
	errExternalAccountRequired = "externalAccountRequired"
	errIncorrectResponse       = "incorrectResponse"
	errInvalidContact          = "invalidContact"
	errInvalidProfile          = "invalidProfile"
	errMalformed               = "malformed"
	errOrderNotReady           = "orderNotReady"
	errRateLimited             = "rateLimited"
	errRejectedIdentifier      = "rejectedIdentifier"
	errServerInternal          = "serverInternal"
	errTLS                     = "tls"
	errUnauthorized            = "unauthorized"
	errUnsupportedContact      = "unsupportedContact"
	errUnsupportedIdentifier   = "unsupportedIdentifier"
)

const errPrefix = "urn:ietf:params:acme:error:"

// Problem is an ACME problem document (RFC 8555 §6.7, RFC 7807). Detail is
// shown to the client: it names what was wrong and never carries a secret.
type Problem struct {
	Type        string      `json:"type"`
	Detail      string      `json:"detail,omitempty"`
	Status      int         `json:"status,omitempty"`
	Identifier  *identifier `json:"identifier,omitempty"`
	Subproblems []Problem   `json:"subproblems,omitempty"`
	// Algorithms lists the accepted signature algorithms in a
	// badSignatureAlgorithm problem (RFC 8555 §6.2).
	Algorithms []string `json:"algorithms,omitempty"`
}

func (p *Problem) Error() string { return p.Type + ": " + p.Detail }

// kind is the ACME error type without its prefix.
func (p *Problem) kind() string {
	if len(p.Type) > len(errPrefix) {
		return p.Type[len(errPrefix):]
	}
	return p.Type
}

func problem(status int, kind, format string, a ...any) *Problem {
	return &Problem{Type: errPrefix + kind, Status: status, Detail: fmt.Sprintf(format, a...)}
}

func malformed(format string, a ...any) *Problem {
	return problem(http.StatusBadRequest, errMalformed, format, a...)
}

func unauthorized(format string, a ...any) *Problem {
	return problem(http.StatusForbidden, errUnauthorized, format, a...)
}

func notFound(what string) *Problem {
	return problem(http.StatusNotFound, errMalformed, "no such %s", what)
}

func internal(format string, a ...any) *Problem {
	return problem(http.StatusInternalServerError, errServerInternal, format, a...)
}

// marshal encodes p for storage in an order or authorization.
func (p *Problem) marshal() []byte {
	b, _ := json.Marshal(p)
	return b
}

func unmarshalProblem(b []byte) *Problem {
	if len(b) == 0 {
		return nil
	}
	p := &Problem{}
	if json.Unmarshal(b, p) != nil {
		return internal("unreadable stored problem")
	}
	return p
}

func writeProblem(w http.ResponseWriter, p *Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	if p.Status == http.StatusTooManyRequests || p.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}
