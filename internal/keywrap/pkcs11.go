//go:build cgo

package keywrap

import (
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// p11 is an open, logged-in session on one token.
type p11 struct {
	ctx     *pkcs11.Ctx
	session pkcs11.SessionHandle
}

func openToken(cfg PKCS11Config) (*p11, error) {
	if cfg.Module == "" {
		return nil, errors.New("keywrap: pkcs11: a module (--pkcs11-module) is required")
	}
	ctx := pkcs11.New(cfg.Module)
	if ctx == nil {
		return nil, fmt.Errorf("keywrap: pkcs11: cannot load module %s", cfg.Module)
	}
	if err := ctx.Initialize(); err != nil {
		ctx.Destroy()
		return nil, fmt.Errorf("keywrap: pkcs11: initialise %s: %w", cfg.Module, err)
	}
	p := &p11{ctx: ctx}
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		p.close()
		return nil, fmt.Errorf("keywrap: pkcs11: list slots: %w", err)
	}
	slot, found := uint(0), false
	for _, s := range slots {
		ti, err := ctx.GetTokenInfo(s)
		if err == nil && ti.Label == cfg.TokenLabel {
			slot, found = s, true
			break
		}
	}
	if !found {
		p.close()
		return nil, fmt.Errorf("keywrap: pkcs11: no token labelled %q in %s", cfg.TokenLabel, cfg.Module)
	}
	if p.session, err = ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION); err != nil {
		p.close()
		return nil, fmt.Errorf("keywrap: pkcs11: open session: %w", err)
	}
	if cfg.PIN == nil {
		p.close()
		return nil, errors.New("keywrap: pkcs11: a user PIN is required (--pkcs11-pin-file)")
	}
	pin, err := cfg.PIN()
	if err != nil {
		p.close()
		return nil, fmt.Errorf("keywrap: pkcs11: read PIN: %w", err)
	}
	if err := ctx.Login(p.session, pkcs11.CKU_USER, string(pin)); err != nil {
		p.close()
		return nil, fmt.Errorf("keywrap: pkcs11: log in to token %q: %w", cfg.TokenLabel, err)
	}
	return p, nil
}

func (p *p11) close() {
	if p.session != 0 {
		p.ctx.Logout(p.session)
		p.ctx.CloseSession(p.session)
	}
	p.ctx.Finalize()
	p.ctx.Destroy()
}

// findKey returns the AES key labelled label; with create, it generates
// one (on the token, sensitive, never extractable) if there is none.
func (p *p11) findKey(label string, create bool) (pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}
	if err := p.ctx.FindObjectsInit(p.session, tmpl); err != nil {
		return 0, fmt.Errorf("keywrap: pkcs11: find key %q: %w", label, err)
	}
	objs, _, err := p.ctx.FindObjects(p.session, 2)
	p.ctx.FindObjectsFinal(p.session)
	if err != nil {
		return 0, fmt.Errorf("keywrap: pkcs11: find key %q: %w", label, err)
	}
	switch {
	case len(objs) == 1:
		return objs[0], nil
	case len(objs) > 1:
		return 0, fmt.Errorf("keywrap: pkcs11: more than one AES key labelled %q", label)
	case !create:
		return 0, fmt.Errorf("keywrap: pkcs11: no AES key labelled %q on the token (the key that sealed the key-encryption key is gone)", label)
	}
	gen := append(tmpl,
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
	)
	h, err := p.ctx.GenerateKey(p.session, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, gen)
	if err != nil {
		return 0, fmt.Errorf("keywrap: pkcs11: generate key %q: %w", label, err)
	}
	return h, nil
}

const gcmNonce = 12

// pkcs11Seal seals the KEK with AES-256-GCM inside the token.
func pkcs11Seal(cfg PKCS11Config, kek []byte) ([]byte, error) {
	p, err := openToken(cfg)
	if err != nil {
		return nil, err
	}
	defer p.close()
	key, err := p.findKey(cfg.KeyLabel, true)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcmNonce)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("keywrap: %w", err)
	}
	params := pkcs11.NewGCMParams(nonce, kekAAD, 128)
	defer params.Free()
	if err := p.ctx.EncryptInit(p.session, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, key); err != nil {
		return nil, fmt.Errorf("keywrap: pkcs11: AES-GCM: %w", err)
	}
	ct, err := p.ctx.Encrypt(p.session, kek)
	if err != nil {
		return nil, fmt.Errorf("keywrap: pkcs11: AES-GCM: %w", err)
	}
	return append(nonce, ct...), nil
}

// pkcs11Open opens a KEK sealed by pkcs11Seal.
func pkcs11Open(cfg PKCS11Config, sealed []byte) ([]byte, error) {
	if len(sealed) < gcmNonce+16 {
		return nil, ErrUnwrap
	}
	p, err := openToken(cfg)
	if err != nil {
		return nil, err
	}
	defer p.close()
	key, err := p.findKey(cfg.KeyLabel, false)
	if err != nil {
		return nil, err
	}
	params := pkcs11.NewGCMParams(sealed[:gcmNonce], kekAAD, 128)
	defer params.Free()
	if err := p.ctx.DecryptInit(p.session, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}, key); err != nil {
		return nil, fmt.Errorf("keywrap: pkcs11: AES-GCM: %w", err)
	}
	kek, err := p.ctx.Decrypt(p.session, sealed[gcmNonce:])
	if err != nil || len(kek) != KeySize {
		return nil, fmt.Errorf("keywrap: pkcs11: the token's key %q does not open the sealed key-encryption key: %w", cfg.KeyLabel, ErrUnwrap)
	}
	return kek, nil
}
