// Package signin is the CLI side of an operator's sign-in: "rampart
// login" gets a short-lived access token for the admin API from the
// server's own authorization server, keeps it, refreshes it, and signs a
// DPoP proof (RFC 9449) for every admin request.
//
// Two flows, both for the public client operator.ClientID:
//
//   - the Device Authorization Grant (RFC 8628): the CLI shows a code and
//     a URL; the operator opens it anywhere, signs in (password and
//     one-time code) and approves; the CLI polls until then. Approve does
//     the approval without a browser (scripts, the demo).
//   - the loopback redirect with PKCE (RFC 8252 §7.3, RFC 7636 S256): the
//     CLI listens on 127.0.0.1 on a port the kernel picks, opens the
//     browser at the authorization endpoint, and takes the code from the
//     redirect (state checked, the issuer's iss checked, RFC 9207).
//
// Every token request carries a DPoP proof by the CLI's own key (P-256,
// made at the first login), so the tokens are bound to it: the access
// token (cnf.jkt) and the refresh token. Transport adds the proofs and
// answers the server's nonce challenge (use_dpop_nonce).
//
// A Session lives in DIR = $XDG_CONFIG_HOME/rampart/operators/SERVER/:
// session.json (the tokens) and dpop-key.pem (the key), both 0600 in a
// 0700 directory; a file group or others may read is refused, not used.
// Authorize refreshes the access token when less than a minute is left
// (rotating the refresh token) and sets "Authorization: DPoP" and the
// proof of the request. A copy of session.json without dpop-key.pem is
// useless to whoever took it: the admin API wants a proof by the key.
package signin
