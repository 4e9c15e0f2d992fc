// Package acme is Rampart's ACME server (RFC 8555): certificates for what
// is not a workload (ingresses, dashboards, databases, a partner's
// endpoint), from the same CA, policy and audit log as SVIDs, to the ACME
// clients teams already run (certbot, lego, Caddy, Traefik, cert-manager).
//
// # Protocol
//
// The directory is at https://SERVER/acme/directory. Accounts need an
// external account binding by default (RFC 8555 §7.3.4): an operator
// creates an EAB key (rampart acme eab create), optionally tied to name
// patterns, and gives its key ID and HMAC key to the client. Orders are
// validated by http-01, tls-alpn-01 (RFC 8737) or dns-01 (through a
// configured resolver); IP identifiers follow RFC 8738. Finalize takes a
// CSR whose names are exactly the order's; the certificate comes from the
// online intermediate with the TLS profile (identity.SignTLS: no SPIFFE
// ID, server auth only unless the account may ask for client auth, short
// lifetime). Certificates are revoked by their account or their key, and
// renewal information (RFC 9773) tells clients when to renew; an order's
// replaces names the certificate it renews.
//
// # Guarantees
//
//   - Requests are JWS in the flattened serialization, checked before
//     anything else: content type, exactly the protected, payload and
//     signature fields, a protected header of alg, jwk or kid, nonce and
//     url only (no crit, no b64, no duplicate fields), url equal to the
//     request's URL, an asymmetric algorithm (ES256, ES384, RS256, PS256,
//     EdDSA) that goes with the key; reads are POST-as-GET.
//   - Nonces are single use across replicas (nonce.go, decision 0038).
//   - An account reads and changes only its own orders, authorizations,
//     challenges and certificates; another account's are "not found".
//   - Which names an account may order is policy (names.go): the EAB
//     key's patterns and the server's; the server's own names never.
//   - Validation reaches only the names of the order, on the configured
//     ports, within a deadline, reading a bounded response (validate.go).
//   - Every account, order, challenge result, issuance and revocation is
//     an audit entry whose actor is the ACME account ("acme:ID");
//     refusals anyone can cause are aggregated by the caller.
//
// The server constructs it (internal/server/acmeapi.go), runs its loop
// (Run) and routes its endpoints: the protocol (Routes) and the
// operator's calls under /v1/acme/ (api.go: EAB keys, certificate lists
// and revocation, behind the acme.read, acme.enrol and acme.revoke
// permissions).
package acme
