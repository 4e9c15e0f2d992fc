package nodeattest

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/rampartsec/rampart/internal/identity/ids"
)

// KindTPM names TPM challenges in the store.
const KindTPM = "tpm"

// TPM 2.0 node attestation, by credential activation and a quote:
//
//  1. the agent sends its endorsement key's public area (EK) and that of
//     an attestation key (AK: a restricted signing key the TPM made,
//     fixedTPM, fixedParent); the server accepts only an EK whose
//     SHA-256 it was given, checks the AK's attributes, and makes a
//     credential (TPM2_MakeCredential, done in software) for the AK's
//     name under the EK: only the TPM holding that EK can activate it,
//     and only for a key of that name loaded in it. With it comes a nonce.
//  2. the agent activates the credential (TPM2_ActivateCredential) and
//     has the AK quote the nonce (TPM2_Quote); the server consumes the
//     nonce, checks the activated secret against what it stored, and the
//     quote's signature by the AK and its extraData (the nonce).
//
// The agent ID is spiffe://TD/rampart/agent/tpm-<first 40 hex digits of
// SHA-256(EK public area)>.

// TPMVerifier verifies TPM proofs against the allowed EKs.
type TPMVerifier struct {
	allowed map[string]bool // hex SHA-256 of the EK public area
}

// NewTPMVerifier allows the EKs whose public areas hash (SHA-256, hex) to
// ekHashes.
func NewTPMVerifier(ekHashes []string) (*TPMVerifier, error) {
	if len(ekHashes) == 0 {
		return nil, errors.New("nodeattest: tpm needs at least one allowed EK hash")
	}
	v := &TPMVerifier{allowed: map[string]bool{}}
	for _, h := range ekHashes {
		h = strings.ToLower(strings.TrimSpace(h))
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("nodeattest: tpm EK hash %q: want 64 hex digits (rampart agent prints its EK's at start)", h)
		}
		v.allowed[h] = true
	}
	return v, nil
}

// EKHash is the hex SHA-256 of an EK public area, as the server allows it.
func EKHash(ekPub []byte) string {
	s := sha256.Sum256(ekPub)
	return hex.EncodeToString(s[:])
}

// TPMChallenge is what the server sends and must remember.
type TPMChallenge struct {
	AgentID                         spiffeid.ID
	Nonce                           []byte
	CredentialBlob, EncryptedSecret []byte
	// State is stored with the nonce: SHA-256 of the credential secret
	// and of the AK public area.
	State []byte
}

// Challenge checks the EK and the AK and makes the credential.
func (v *TPMVerifier) Challenge(td spiffeid.TrustDomain, ekPub, akPub []byte) (TPMChallenge, error) {
	id, ek, err := v.checkEK(td, ekPub)
	if err != nil {
		return TPMChallenge{}, err
	}
	ak, err := checkAK(akPub)
	if err != nil {
		return TPMChallenge{}, err
	}
	name, err := tpm2.ObjectName(ak)
	if err != nil {
		return TPMChallenge{}, fmt.Errorf("%w: AK name: %v", ErrRefused, err)
	}
	kem, err := tpm2.ImportEncapsulationKey(ek)
	if err != nil {
		return TPMChallenge{}, fmt.Errorf("%w: EK: %v", ErrRefused, err)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	blob, enc, err := tpm2.CreateCredential(rand.Reader, kem, name.Buffer, secret)
	if err != nil {
		return TPMChallenge{}, fmt.Errorf("nodeattest: make credential: %w", err)
	}
	nonce := make([]byte, NonceSize)
	rand.Read(nonce)
	return TPMChallenge{AgentID: id, Nonce: nonce, CredentialBlob: blob, EncryptedSecret: enc, State: tpmState(secret, akPub)}, nil
}

func tpmState(secret, akPub []byte) []byte {
	a, b := sha256.Sum256(secret), sha256.Sum256(akPub)
	return append(a[:], b[:]...)
}

// Verify checks the answer to a challenge whose stored state is state:
// the activated secret, and a quote over the nonce signed by the AK.
func (v *TPMVerifier) Verify(td spiffeid.TrustDomain, ekPub, akPub, nonce, secret, quote, sig, state []byte) (spiffeid.ID, error) {
	id, _, err := v.checkEK(td, ekPub)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if subtle.ConstantTimeCompare(tpmState(secret, akPub), state) != 1 {
		return spiffeid.ID{}, fmt.Errorf("%w: the credential was not activated by the TPM holding this EK for this AK", ErrRefused)
	}
	ak, err := checkAK(akPub)
	if err != nil {
		return spiffeid.ID{}, err
	}
	pub, err := tpm2.Pub(*ak)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: AK: %v", ErrRefused, err)
	}
	ecPub, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return spiffeid.ID{}, fmt.Errorf("%w: the AK is not an ECDSA key", ErrRefused)
	}
	s, err := tpm2.Unmarshal[tpm2.TPMTSignature](sig)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: quote signature: %v", ErrRefused, err)
	}
	es, err := s.Signature.ECDSA()
	if err != nil || es.Hash != tpm2.TPMAlgSHA256 {
		return spiffeid.ID{}, fmt.Errorf("%w: the quote signature is not ECDSA with SHA-256", ErrRefused)
	}
	d := sha256.Sum256(quote)
	if !ecdsa.Verify(ecPub, d[:], new(big.Int).SetBytes(es.SignatureR.Buffer), new(big.Int).SetBytes(es.SignatureS.Buffer)) {
		return spiffeid.ID{}, fmt.Errorf("%w: the quote is not signed by the attested AK", ErrRefused)
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](quote)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: quote: %v", ErrRefused, err)
	}
	if att.Magic != tpm2.TPMGeneratedValue || att.Type != tpm2.TPMSTAttestQuote {
		return spiffeid.ID{}, fmt.Errorf("%w: not a TPM-generated quote", ErrRefused)
	}
	if subtle.ConstantTimeCompare(att.ExtraData.Buffer, nonce) != 1 {
		return spiffeid.ID{}, fmt.Errorf("%w: the quote is over another nonce", ErrRefused)
	}
	return id, nil
}

func (v *TPMVerifier) checkEK(td spiffeid.TrustDomain, ekPub []byte) (spiffeid.ID, *tpm2.TPMTPublic, error) {
	h := EKHash(ekPub)
	if !v.allowed[h] {
		return spiffeid.ID{}, nil, fmt.Errorf("%w: unknown EK %s (allow it with --node-attest-tpm-ek-hash)", ErrRefused, h)
	}
	ek, err := tpm2.Unmarshal[tpm2.TPMTPublic](ekPub)
	if err != nil {
		return spiffeid.ID{}, nil, fmt.Errorf("%w: EK public area: %v", ErrRefused, err)
	}
	id, err := ids.AgentID(td, "tpm-"+h[:40])
	return id, ek, err
}

// checkAK parses an AK public area and checks it is a restricted signing
// key generated in, and bound to, the TPM.
func checkAK(akPub []byte) (*tpm2.TPMTPublic, error) {
	ak, err := tpm2.Unmarshal[tpm2.TPMTPublic](akPub)
	if err != nil {
		return nil, fmt.Errorf("%w: AK public area: %v", ErrRefused, err)
	}
	a := ak.ObjectAttributes
	if !a.Restricted || !a.SignEncrypt || a.Decrypt || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin {
		return nil, fmt.Errorf("%w: the AK must be a restricted signing key generated in the TPM (fixedTPM, fixedParent)", ErrRefused)
	}
	if ak.Type != tpm2.TPMAlgECC {
		return nil, fmt.Errorf("%w: the AK must be an ECC key", ErrRefused)
	}
	return ak, nil
}

// AKTemplate is the attestation key the agent makes: ECC P-256, ECDSA
// with SHA-256, restricted signing, fixed to the TPM.
var AKTemplate = tpm2.TPMTPublic{
	Type:    tpm2.TPMAlgECC,
	NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
		Restricted: true, SignEncrypt: true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
		CurveID: tpm2.TPMECCNistP256,
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
}

// TPM is the agent's side: a TPM reached through t.
type TPM struct {
	t      transport.TPM
	ek, ak *tpm2.CreatePrimaryResponse
}

// OpenTPM makes (deterministically, from the hierarchies' seeds) the RSA
// EK and the AK in the TPM t.
func OpenTPM(t transport.TPM) (*TPM, error) {
	ek, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHEndorsement, InPublic: tpm2.New2B(tpm2.RSAEKTemplate)}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("nodeattest: tpm: create EK: %w", err)
	}
	ak, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(AKTemplate)}.Execute(t)
	if err != nil {
		tpm2.FlushContext{FlushHandle: ek.ObjectHandle}.Execute(t)
		return nil, fmt.Errorf("nodeattest: tpm: create AK: %w", err)
	}
	return &TPM{t: t, ek: ek, ak: ak}, nil
}

// Close flushes the keys from the TPM.
func (m *TPM) Close() {
	tpm2.FlushContext{FlushHandle: m.ak.ObjectHandle}.Execute(m.t)
	tpm2.FlushContext{FlushHandle: m.ek.ObjectHandle}.Execute(m.t)
}

// EKPublic and AKPublic are the keys' public areas (TPMT_PUBLIC).
func (m *TPM) EKPublic() []byte { return m.ek.OutPublic.Bytes() }

// AKPublic is the AK's public area (TPMT_PUBLIC).
func (m *TPM) AKPublic() []byte { return m.ak.OutPublic.Bytes() }

// Answer activates the credential and quotes the nonce with the AK.
func (m *TPM) Answer(blob, encSecret, nonce []byte) (secret, quote, sig []byte, err error) {
	ekPolicy := func(t transport.TPM, handle tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{AuthHandle: tpm2.TPMRHEndorsement, PolicySession: handle, NonceTPM: nonceTPM}.Execute(t)
		return err
	}
	ac, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.NamedHandle{Handle: m.ak.ObjectHandle, Name: m.ak.Name},
		KeyHandle:      tpm2.AuthHandle{Handle: m.ek.ObjectHandle, Name: m.ek.Name, Auth: tpm2.Policy(tpm2.TPMAlgSHA256, 16, ekPolicy)},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: blob},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: encSecret},
	}.Execute(m.t)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("nodeattest: tpm: activate credential: %w", err)
	}
	q, err := tpm2.Quote{
		SignHandle:     tpm2.AuthHandle{Handle: m.ak.ObjectHandle, Name: m.ak.Name, Auth: tpm2.PasswordAuth(nil)},
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
			{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0x01, 0x00, 0x00}}, // PCR 0
		}},
	}.Execute(m.t)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("nodeattest: tpm: quote: %w", err)
	}
	return ac.CertInfo.Buffer, q.Quoted.Bytes(), tpm2.Marshal(q.Signature), nil
}
