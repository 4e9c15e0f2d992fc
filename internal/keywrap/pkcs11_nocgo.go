//go:build !cgo

package keywrap

import "errors"

var errNoCgo = errors.New("keywrap: pkcs11: this binary was built without cgo (CGO_ENABLED=0), so it cannot load a PKCS#11 module")

func pkcs11Seal(PKCS11Config, []byte) ([]byte, error) { return nil, errNoCgo }

func pkcs11Open(PKCS11Config, []byte) ([]byte, error) { return nil, errNoCgo }
