// Package svid builds and checks X.509-SVIDs as the SPIFFE X.509-SVID
// specification defines them, and checks the certificate signing requests
// agents send for them.
//
// From the spec (SPIFFE X.509-SVID, sections 4 and 5):
//
//   - "An X.509 SVID MUST contain exactly one URI SAN" — the SPIFFE ID;
//   - leaf SVIDs set digitalSignature, MUST NOT set keyCertSign or cRLSign, and
//     carry basicConstraints with cA=false;
//   - signing certificates set cA=true and keyCertSign.
//
// The CA never copies anything from a CSR but its public key: identity,
// lifetime, key usage and constraints come from the registration entry. A CSR
// that asks for something else (another SPIFFE ID, a CA bit, a foreign trust
// domain, extra names) is refused with an error naming what it asked for, so
// the attempt is visible rather than silently corrected.
package svid
