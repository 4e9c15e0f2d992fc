package gobin

import (
	"bytes"
	"debug/elf"
	"os"
	"testing"
)

// ownPclntab is the pclntab of the test binary itself, a real Go binary.
func ownPclntab(t testing.TB) ([]byte, *elf.File) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Skip("not an ELF test binary:", err)
	}
	sec := f.Section(".gopclntab")
	if sec == nil {
		t.Skip("no .gopclntab")
	}
	b, err := sec.Data()
	if err != nil {
		t.Fatal(err)
	}
	return b, f
}

// TestReadSelf reads the test binary.
func TestReadSelf(t *testing.T) {
	exe, _ := os.Executable()
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := Read(f)
	if err != nil {
		t.Fatal(err)
	}
	if b.GoVersion == "" || b.Path == "" {
		t.Errorf("build info of the test binary: %+v", b)
	}
	// go test links with -s: no symbol table, which must be said, not
	// taken for "no function".
	if b.SymbolsErr == "" && len(b.Symbols["testing"]) == 0 {
		t.Errorf("no symbols and no reason: %+v", b.SymbolsErr)
	}
}

// TestReadRefuses: what is not a Go binary, or is a damaged one, is an
// error, never a panic.
func TestReadRefuses(t *testing.T) {
	for name, b := range map[string][]byte{"empty": nil, "text": []byte("#!/bin/sh\necho hi\n"), "elf header only": []byte("\x7fELF\x02\x01\x01")} {
		if _, err := Read(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	tab, _ := ownPclntab(t)
	for name, b := range map[string][]byte{"truncated": tab[:64], "bad magic": append([]byte{1, 2, 3, 4}, tab[4:64]...)} {
		p, err := parseHeader(b, littleEndian())
		if err == nil {
			p.gofunc = bytes.NewReader(nil)
			_, err = p.symbols("")
		}
		if err == nil {
			t.Errorf("%s pclntab: accepted", name)
		}
	}
}

// FuzzPclntab feeds damaged function tables to the parser.
func FuzzPclntab(f *testing.F) {
	tab, _ := ownPclntab(f)
	f.Add(tab[:min(len(tab), 1<<16)])
	f.Add(tab[:128])
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseHeader(b, littleEndian())
		if err != nil {
			return
		}
		p.gofunc = bytes.NewReader(b)
		p.symbols("go1.26")
	})
}
