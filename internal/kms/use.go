package kms

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/store"
)

// ErrDenied: the key-use policy allows the caller no such use. The error
// wrapping it reads as what the caller may be told.
var ErrDenied = errors.New("kms: denied by the key-use policy")

type deniedError struct{ msg string }

func (e *deniedError) Error() string { return e.msg }
func (e *deniedError) Unwrap() error { return ErrDenied }

// Use is one use of a key by a workload: Op (one of Operations) with Key,
// and the inputs the operation takes.
type Use struct {
	Caller                                              spiffeid.ID
	Key, Op                                             string
	Plaintext, Ciphertext, AAD, Message, Signature, MAC []byte
}

// Result is what a use returns.
type Result struct {
	Version                               int
	Plaintext, Ciphertext, Signature, MAC []byte
	Valid                                 *bool // verify, verify-hmac
}

// CallerError says whether err is the caller's doing (a missing key, a
// disabled version, a wrong key type, a ciphertext that does not
// decrypt, ...), which it may be told; any other error is the key
// store's, which it may not.
func CallerError(err error) bool {
	for _, e := range []error{ErrNotFound, ErrExists, ErrDisabled, store.ErrConflict, ErrInvalid, ErrWrongType, ErrDecrypt,
		ErrMalformed, ErrOtherKey, ErrDenied} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Do performs u if the key-use policy allows it. Allowed or not, it
// returns the audit entry of the use (caller, key, version, operation,
// the policy's version and rule, the input's size; never the data),
// which the caller must record durably before it hands out the result: a
// use the log does not have did not happen.
func (s *Service) Do(ctx context.Context, access *Access, u Use, now time.Time) (Result, *audit.Entry, error) {
	e := &audit.Entry{V: audit.SchemaVersion, Time: now, Action: "kms." + u.Op, Target: "kms:" + u.Key, Source: "server",
		Actor:   audit.Actor{SpiffeID: u.Caller.String()},
		Details: map[string]string{"key": u.Key, "size": strconv.Itoa(len(u.Plaintext) + len(u.Ciphertext) + len(u.Message))}}
	d := access.Decide(u.Caller, u.Key, u.Op)
	e.Details["policy_version"] = d.Version
	if d.Rule != "" {
		e.Details["rule"] = d.Rule
	}
	if d.DryRunDenied {
		e.Details["dry_run_denied"] = "true"
	}
	if !d.Allowed {
		e.Outcome, e.Reason = audit.OutcomeDenied, "no rule of the key-use policy allows "+u.Op+" on this key"
		return Result{}, e, &deniedError{fmt.Sprintf("%s may not %s with key %q (key-use policy version %s)", u.Caller, u.Op, u.Key, d.Version)}
	}
	res, err := s.do(ctx, u)
	if err != nil {
		e.Outcome, e.Reason = audit.OutcomeFailure, "key store error"
		if CallerError(err) {
			e.Reason = err.Error()
		}
		return res, e, err
	}
	e.Outcome = audit.OutcomeSuccess
	e.Details["version"] = strconv.Itoa(res.Version)
	if res.Valid != nil {
		e.Details["valid"] = strconv.FormatBool(*res.Valid)
	}
	return res, e, nil
}

func (s *Service) do(ctx context.Context, u Use) (Result, error) {
	var r Result
	var err error
	switch u.Op {
	case "encrypt":
		r.Ciphertext, r.Version, err = s.Encrypt(ctx, u.Key, u.Plaintext, u.AAD)
	case "decrypt":
		r.Plaintext, r.Version, err = s.Decrypt(ctx, u.Key, u.Ciphertext, u.AAD)
	case "datakey":
		r.Plaintext, r.Ciphertext, r.Version, err = s.DataKey(ctx, u.Key, u.AAD)
	case "rewrap":
		r.Ciphertext, r.Version, err = s.Rewrap(ctx, u.Key, u.Ciphertext, u.AAD)
	case "sign":
		r.Signature, r.Version, err = s.Sign(ctx, u.Key, u.Message)
	case "verify":
		var ok bool
		ok, r.Version, err = s.Verify(ctx, u.Key, u.Message, u.Signature)
		r.Valid = &ok
	case "hmac":
		r.MAC, r.Version, err = s.MAC(ctx, u.Key, u.Message)
	case "verify-hmac":
		var ok bool
		ok, r.Version, err = s.VerifyMAC(ctx, u.Key, u.Message, u.MAC)
		r.Valid = &ok
	default:
		return r, fmt.Errorf("%w: operation %q", ErrInvalid, u.Op)
	}
	return r, err
}
