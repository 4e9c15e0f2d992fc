package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/api"
	"github.com/rampartsec/rampart/internal/audit"
	"github.com/rampartsec/rampart/internal/detect"
	"github.com/rampartsec/rampart/internal/identity"
	"github.com/rampartsec/rampart/internal/oauth"
	"github.com/rampartsec/rampart/internal/respond"
	"github.com/rampartsec/rampart/internal/store"
)

// newRespond builds the response engine over the store, the audit log and
// the server's own powers (respondEffects).
func (s *Server) newRespond(holder bool) error {
	rst, ok := store.Respond(s.store)
	if !ok {
		return errors.New("server: the store has no response tables")
	}
	src := s.cfg.DetectRules
	if src == nil {
		src = detect.DefaultRules()
	}
	rules := map[string]bool{}
	if rs, err := detect.Parse(src); err == nil {
		for _, r := range rs.Rules {
			rules[r.Name] = true
		}
	}
	var scoper *respond.Scoper
	if holder {
		scoper = &respond.Scoper{Dir: filepath.Join(s.cfg.DataDir, "audit"), Index: filepath.Join(s.cfg.DataDir, "respond-scope-index.json")}
	}
	s.respond = respond.New(respond.Config{Store: rst, Scoper: scoper, Effects: respondEffects{s}, Append: s.appendAudit, Changed: s.notify,
		KnownRule: func(name string) bool { return rules[name] }, Alert: s.store.GetAlert, AllowLocalWebhooks: s.cfg.PlaybookWebhooksLocal, Now: s.now, Log: s.log})
	s.respondAPI = &respond.API{Service: s.respond, Actor: s.actorOf, Log: s.log}
	return nil
}

// actorOf names who made request r, exactly as the audit log does
// (setActor): the one place the respond engine learns who asks and who
// approves, so named operators (issue 19) arrive here with no other change.
func (s *Server) actorOf(r *http.Request) audit.Actor {
	e := &audit.Entry{Details: map[string]string{}}
	s.setActor(e, r, "", audit.OutcomeSuccess)
	return e.Actor
}

// unlessQuarantined refuses a quarantined workload (403, recorded as a
// refusal of action): a stolen identity, once contained, must not go on
// decrypting through the key store while its SVIDs are still valid.
func (s *Server) unlessQuarantined(action string, target func(*http.Request) string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if caller := agentFrom(r); !caller.IsZero() && s.quarantine.Holds(caller) {
			s.refused(r, action, "caller quarantined", "target", target(r))
			api.WriteProblem(w, http.StatusForbidden, caller.String()+" is quarantined")
			return
		}
		h(w, r)
	}
}

// handleWorkloadApprove lets a workload named in Config.Approvers approve
// a step (an interim until operators, issue 19, bind roles to workloads
// on the admin routes): the approver is its SPIFFE ID, which the
// two-person rule tells apart from whoever started the run.
func (s *Server) handleWorkloadApprove(w http.ResponseWriter, r *http.Request) {
	caller := agentFrom(r)
	if !s.approver(caller) {
		s.refused(r, "respond.approve", "workload is not an approver", "ref", r.PathValue("ref"))
		api.WriteProblem(w, http.StatusForbidden, caller.String()+" may not approve (not among the server's --approver identities)")
		return
	}
	s.respondAPI.HandleApprove(w, r)
}

func (s *Server) approver(id spiffeid.ID) bool {
	if id.IsZero() {
		return false
	}
	v := id.String()
	return slices.ContainsFunc(s.cfg.Approvers, func(p string) bool {
		if prefix, ok := strings.CutSuffix(p, "/*"); ok {
			return strings.HasPrefix(v, prefix+"/")
		}
		return p == v
	})
}

// respondEffects is what a playbook may do, through the same code the
// admin endpoints use; every change is recorded as the respond engine's.
type respondEffects struct{ s *Server }

var _ respond.Effects = respondEffects{}

func (e respondEffects) event(ctx context.Context, action string, kv ...string) {
	en := &audit.Entry{V: audit.SchemaVersion, Time: e.s.now(), Actor: respond.Actor, Action: action, Outcome: audit.OutcomeSuccess,
		Source: "server", Details: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		en.Details[kv[i]] = kv[i+1]
		if en.Target == "" && (kv[i] == "spiffe_id" || kv[i] == "agent_id" || kv[i] == "target") {
			en.Target = kv[i+1]
		}
	}
	e.s.record(ctx, en)
}

func (e respondEffects) RevokeSVIDs(ctx context.Context, pattern, reason string) ([]string, error) {
	svids, err := e.s.store.ListSVIDs(ctx, store.SVIDFilter{}, e.s.now())
	if err != nil {
		return nil, err
	}
	prefix, isPattern := strings.CutSuffix(pattern, "/*")
	var ids []string
	for _, sv := range svids {
		if (isPattern && (sv.SpiffeID == prefix || strings.HasPrefix(sv.SpiffeID, prefix+"/"))) || sv.SpiffeID == pattern {
			if !slices.Contains(ids, sv.SpiffeID) {
				ids = append(ids, sv.SpiffeID)
			}
		}
	}
	var serials []string
	for _, id := range ids {
		revs, err := e.s.registrar.Revoke(ctx, e.s.store, "", id, reason)
		if err != nil {
			return serials, err
		}
		for _, rv := range revs {
			e.event(ctx, "svid.revoke", "serial", rv.Serial, "spiffe_id", rv.SpiffeID, "reason", rv.Reason)
			serials = append(serials, rv.Serial)
		}
	}
	e.s.notify(ctx)
	return serials, nil
}

func (e respondEffects) EvictAgent(ctx context.Context, name string) (int, error) {
	id, err := identity.AgentID(e.s.cfg.TrustDomain, name)
	if err != nil {
		return 0, err
	}
	a, err := e.s.store.GetAgent(ctx, id.String())
	if err != nil {
		return 0, err
	}
	revs, err := e.s.registrar.Evict(ctx, e.s.store, a)
	if err != nil {
		return 0, err
	}
	for _, rv := range revs {
		e.event(ctx, "svid.revoke", "serial", rv.Serial, "spiffe_id", rv.SpiffeID, "reason", rv.Reason)
	}
	e.s.notify(ctx)
	e.event(ctx, "agent.evict", "agent_id", a.SpiffeID, "revoked", fmt.Sprint(len(revs)))
	return len(revs), nil
}

func (e respondEffects) revoker() (oauth.Revoker, error) {
	t := e.s.tokens()
	if t == nil {
		return nil, errors.New("the authorization server is not running")
	}
	return t, nil
}

func (e respondEffects) RevokeUser(ctx context.Context, user, reason string) (int, error) {
	t, err := e.revoker()
	if err != nil {
		return 0, err
	}
	// A name that matches no one (a typo, an empty variable) is a failed
	// step, not a quiet success that revoked nothing.
	if _, err := e.s.store.GetOAuthUser(ctx, user); err != nil {
		return 0, err
	}
	n, err := t.RevokeUser(ctx, user, reason)
	if err == nil {
		e.event(ctx, "oauth.user_revoke", "target", user, "user", user, "revoked_families", fmt.Sprint(n))
		e.s.notify(ctx)
	}
	return n, err
}

func (e respondEffects) DisableUser(ctx context.Context, user string) (int, error) {
	yes := true
	ch, err := e.s.accounts.UpdateUser(ctx, user, oauth.UserChange{Disabled: &yes})
	if err != nil {
		return 0, err
	}
	e.event(ctx, "oauth.user_update", "target", user, "user", user, "changed", strings.Join(ch.Changed, ","), "revoked_families", fmt.Sprint(ch.Revoked))
	e.s.notify(ctx)
	return ch.Revoked, nil
}

func (e respondEffects) RevokeClient(ctx context.Context, client, reason string) (int, error) {
	t, err := e.revoker()
	if err != nil {
		return 0, err
	}
	if _, err := e.s.store.GetOAuthClient(ctx, client); err != nil {
		return 0, err
	}
	n, err := t.RevokeClient(ctx, client, reason)
	if err == nil {
		e.event(ctx, "oauth.client_revoke", "target", client, "client_id", client, "revoked_families", fmt.Sprint(n))
		e.s.notify(ctx)
	}
	return n, err
}

func (e respondEffects) DisableClient(ctx context.Context, client string) (int, error) {
	yes := true
	c, n, err := e.s.accounts.SetClientDisabled(ctx, client, &yes)
	if err != nil {
		return 0, err
	}
	e.event(ctx, "oauth.client_update", "target", c.ID, "client_id", c.ID, "disabled", "true", "revoked_families", fmt.Sprint(n))
	e.s.notify(ctx)
	return n, nil
}

func (e respondEffects) RotateKey(ctx context.Context, kind, name string) (string, error) {
	switch kind {
	case "kms":
		info, err := e.s.kmsAPI.Service.Rotate(ctx, name)
		if err != nil {
			return "", err
		}
		e.event(ctx, "kms.rotate", "target", "kms:"+name, "key", name, "version", fmt.Sprint(info.Latest))
		return fmt.Sprintf("version %d", info.Latest), nil
	case "ca":
		if err := e.s.ca.Rotate(ctx, identity.RotateIntermediate); err != nil {
			return "", err
		}
		e.s.notify(ctx)
		e.event(ctx, "ca.rotate", "target", identity.RotateIntermediate)
		return "a new intermediate", nil
	case "oauth":
		// A new token signing key signs from now on; the old ones stay
		// published until their tokens expire (name "drop": withdrawn at
		// once, so every token they signed is refused).
		if e.s.oauth == nil {
			return "", errors.New("the authorization server is not running")
		}
		old, kid, err := e.s.oauth.RekeySigningKey(ctx, name == "drop")
		if err != nil {
			return "", err
		}
		e.s.notify(ctx)
		e.event(ctx, "oauth.signing_key_rotate", "target", kid, "old", strings.Join(old, ","), "dropped", fmt.Sprint(name == "drop"))
		if name == "drop" {
			return "signing key " + kid + "; the old ones withdrawn", nil
		}
		return "signing key " + kid + "; the old ones verify until their tokens expire", nil
	}
	return "", fmt.Errorf("unknown key kind %q", kind)
}

func kmsTarget(r *http.Request) string      { return "kms:" + r.PathValue("name") }
func approvalTarget(r *http.Request) string { return r.PathValue("ref") }
