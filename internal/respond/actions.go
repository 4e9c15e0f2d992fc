package respond

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/rampartsec/rampart/internal/mtls"
)

// Effects is what a playbook can do to the rest of the system: the
// server implements it over the registrar, the OAuth accounts, the key
// store and the CA. Each method acts at once and says what it did.
type Effects interface {
	// RevokeSVIDs revokes every unexpired SVID of a SPIFFE ID or
	// "ID/*" pattern and returns the serials.
	RevokeSVIDs(ctx context.Context, pattern, reason string) ([]string, error)
	// EvictAgent evicts an agent (by name) and revokes what it issued.
	EvictAgent(ctx context.Context, name string) (int, error)
	// RevokeUser revokes a user's sessions and tokens; DisableUser also
	// refuses their sign-in until enabled again.
	RevokeUser(ctx context.Context, user, reason string) (int, error)
	DisableUser(ctx context.Context, user string) (int, error)
	// RevokeClient revokes an OAuth client's tokens; DisableClient also
	// refuses it new ones.
	RevokeClient(ctx context.Context, client, reason string) (int, error)
	DisableClient(ctx context.Context, client string) (int, error)
	// RotateKey rotates a key: kind "kms" (a key-store key by name) or
	// "ca" (the CA's intermediate; name ignored). It returns the new
	// version or key id.
	RotateKey(ctx context.Context, kind, name string) (string, error)
}

// step is what an action sees: its arguments with the variables
// substituted, the run, and the service.
type step struct {
	svc  *Service
	run  *Run
	args map[string]string
}

// actionSpec is one action of the registry: its arguments, an optional
// check at upload time, and what it does.
type actionSpec struct {
	Required, Optional []string
	Check              func(with map[string]string, p *Playbook) error
	// Do acts and returns a one-line result for the timeline.
	Do func(ctx context.Context, s step) (string, error)
	// Effect says, for --dry-run, what the step would do.
	Effect func(s step) string
}

// actions is the registry of playbook actions (filled by init: the
// actions refer to the parser that refers to them).
var actions map[string]actionSpec

func init() { actions = registry() }

func registry() map[string]actionSpec {
	return map[string]actionSpec{
		"quarantine": {Required: []string{"identity"}, Optional: []string{"reason"}, Check: checkIdentityArg,
			Do: func(ctx context.Context, s step) (string, error) {
				reason := s.args["reason"]
				if reason == "" {
					reason = "playbook " + s.run.Playbook + " run " + s.run.ID
				}
				q, err := s.svc.Quarantine(ctx, s.args["identity"], reason, s.run.Incident, s.svc.actor(s.run))
				if err != nil {
					return "", err
				}
				return "quarantined " + q.Pattern + " (" + q.ID + "): refused in and out at every proxy and SDK service, open connections ended", nil
			},
			Effect: func(s step) string {
				return "quarantine " + s.args["identity"] + " everywhere and end its open connections"
			}},
		"revoke_svids": {Required: []string{"identity"}, Optional: []string{"reason"}, Check: checkIdentityArg,
			Do: func(ctx context.Context, s step) (string, error) {
				serials, err := s.svc.effects().RevokeSVIDs(ctx, s.args["identity"], orDefault(s.args["reason"], "playbook "+s.run.Playbook))
				if err != nil {
					return "", err
				}
				return fmt.Sprintf("revoked %d SVIDs of %s", len(serials), s.args["identity"]), nil
			},
			Effect: func(s step) string { return "revoke every unexpired SVID of " + s.args["identity"] }},
		"evict_agent": {Required: []string{"agent"},
			Do: func(ctx context.Context, s step) (string, error) {
				n, err := s.svc.effects().EvictAgent(ctx, s.args["agent"])
				return fmt.Sprintf("evicted agent %s, %d SVIDs revoked", s.args["agent"], n), err
			},
			Effect: func(s step) string { return "evict agent " + s.args["agent"] + " and revoke what it issued" }},
		"revoke_user": {Required: []string{"user"}, Optional: []string{"reason"},
			Do: func(ctx context.Context, s step) (string, error) {
				n, err := s.svc.effects().RevokeUser(ctx, s.args["user"], orDefault(s.args["reason"], "playbook "+s.run.Playbook))
				return fmt.Sprintf("revoked %d sessions of user %s", n, s.args["user"]), err
			},
			Effect: func(s step) string { return "revoke the sessions and tokens of user " + s.args["user"] }},
		"disable_user": {Required: []string{"user"},
			Do: func(ctx context.Context, s step) (string, error) {
				n, err := s.svc.effects().DisableUser(ctx, s.args["user"])
				return fmt.Sprintf("disabled user %s, %d sessions revoked", s.args["user"], n), err
			},
			Effect: func(s step) string { return "disable user " + s.args["user"] }},
		"revoke_client": {Required: []string{"client"}, Optional: []string{"reason"},
			Do: func(ctx context.Context, s step) (string, error) {
				n, err := s.svc.effects().RevokeClient(ctx, s.args["client"], orDefault(s.args["reason"], "playbook "+s.run.Playbook))
				return fmt.Sprintf("revoked %d token families of client %s", n, s.args["client"]), err
			},
			Effect: func(s step) string { return "revoke the tokens of OAuth client " + s.args["client"] }},
		"disable_client": {Required: []string{"client"},
			Do: func(ctx context.Context, s step) (string, error) {
				n, err := s.svc.effects().DisableClient(ctx, s.args["client"])
				return fmt.Sprintf("disabled client %s, %d token families revoked", s.args["client"], n), err
			},
			Effect: func(s step) string { return "disable OAuth client " + s.args["client"] }},
		"rotate_key": {Required: []string{"kind"}, Optional: []string{"name"},
			Check: func(with map[string]string, _ *Playbook) error {
				switch with["kind"] {
				case "kms":
					if with["name"] == "" {
						return errors.New("kind kms needs name (the key-store key)")
					}
				case "ca":
				case "oauth":
					if n := with["name"]; n != "" && n != "drop" {
						return fmt.Errorf("kind oauth takes no name, or name drop (withdraw the old signing keys at once): %q", n)
					}
				default:
					return fmt.Errorf("kind %q: want kms (a key-store key), ca (the CA intermediate) or oauth (the token signing key)", with["kind"])
				}
				return nil
			},
			Do: func(ctx context.Context, s step) (string, error) {
				v, err := s.svc.effects().RotateKey(ctx, s.args["kind"], s.args["name"])
				return fmt.Sprintf("rotated %s %s: now %s", s.args["kind"], s.args["name"], v), err
			},
			Effect: func(s step) string { return "rotate " + s.args["kind"] + " key " + s.args["name"] }},
		"incident": {Optional: []string{"title", "severity", "owner", "status", "identity"},
			Check: func(with map[string]string, _ *Playbook) error {
				if v := with["severity"]; v != "" && !strings.Contains(v, "${") && !validSeverity(v) {
					return fmt.Errorf("severity %q: want one of %s", v, strings.Join(Severities, ", "))
				}
				if v := with["status"]; v != "" && !validStatus(v) {
					return fmt.Errorf("status %q: want one of %s", v, strings.Join(Statuses, ", "))
				}
				return nil
			},
			Do: func(ctx context.Context, s step) (string, error) { return s.svc.incidentStep(ctx, s.run, s.args) },
			Effect: func(s step) string {
				return "open (or update) incident " + orDefault(s.args["title"], s.run.Playbook)
			}},
		"notice": {Required: []string{"notice"},
			Check: func(with map[string]string, p *Playbook) error {
				if _, ok := p.Notices[with["notice"]]; !ok {
					return fmt.Errorf("notice %q is not under notices", with["notice"])
				}
				return nil
			},
			Do: func(ctx context.Context, s step) (string, error) {
				return s.svc.sendNotice(ctx, s.run, s.args["notice"])
			},
			Effect: func(s step) string {
				return "send notice " + s.args["notice"]
			}},
		"webhook": {Required: []string{"url"}, Optional: []string{"text"},
			Check: func(with map[string]string, _ *Playbook) error {
				if u := with["url"]; !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
					return fmt.Errorf("url %q: want http(s)", u)
				}
				return nil
			},
			Do: func(ctx context.Context, s step) (string, error) {
				body, _ := json.Marshal(map[string]string{"playbook": s.run.Playbook, "run": s.run.ID, "incident": s.run.Incident,
					"alert": s.run.Alert.ID, "text": s.args["text"]})
				return postJSON(ctx, s.svc.client(), s.args["url"], body)
			},
			Effect: func(s step) string { return "POST to " + s.args["url"] }},
		"stop": {Optional: []string{"reason"},
			Do: func(context.Context, step) (string, error) { return "", errStop },
			Effect: func(s step) string {
				return "stop the playbook: " + orDefault(s.args["reason"], "no reason given")
			}},
	}
}

// errNoEffects: the server gave the service no Effects.
var errNoEffects = errors.New("respond: this action is not available here (no effects configured)")

type noEffects struct{}

func (noEffects) RevokeSVIDs(context.Context, string, string) ([]string, error) {
	return nil, errNoEffects
}
func (noEffects) EvictAgent(context.Context, string) (int, error)           { return 0, errNoEffects }
func (noEffects) RevokeUser(context.Context, string, string) (int, error)   { return 0, errNoEffects }
func (noEffects) DisableUser(context.Context, string) (int, error)          { return 0, errNoEffects }
func (noEffects) RevokeClient(context.Context, string, string) (int, error) { return 0, errNoEffects }
func (noEffects) DisableClient(context.Context, string) (int, error)        { return 0, errNoEffects }
func (noEffects) RotateKey(context.Context, string, string) (string, error) { return "", errNoEffects }

func (s *Service) effects() Effects {
	if s.cfg.Effects == nil {
		return noEffects{}
	}
	return s.cfg.Effects
}

// errStop ends a run at a stop step; it is not a failure.
var errStop = errors.New("respond: stop")

func checkIdentityArg(with map[string]string, _ *Playbook) error {
	id := with["identity"]
	if strings.Contains(id, "${") {
		return nil // checked at run time, once substituted
	}
	return mtls.CheckQuarantinePattern(id)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func postJSON(ctx context.Context, c *http.Client, url string, body []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 300 {
		return "", fmt.Errorf("%s answered %s", url, resp.Status)
	}
	return "posted to " + url + ": " + resp.Status, nil
}
