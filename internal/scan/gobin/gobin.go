package gobin

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"debug/gosym"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
)

// Module is one module the binary was built with.
type Module struct {
	Path    string `json:"path"`
	Version string `json:"version"`
	Sum     string `json:"sum,omitempty"`
	// Replace is the module used in its place, if it was replaced.
	Replace *Module `json:"replace,omitempty"`
}

// Effective returns the module whose code is in the binary.
func (m Module) Effective() Module {
	if m.Replace != nil {
		return *m.Replace
	}
	return m
}

// Binary is what a Go binary says about itself.
type Binary struct {
	GoVersion string   `json:"go_version"`
	Path      string   `json:"path,omitempty"` // main package
	Main      Module   `json:"main"`
	Modules   []Module `json:"modules,omitempty"`
	GOOS      string   `json:"goos,omitempty"`
	GOARCH    string   `json:"goarch,omitempty"`
	// Symbols maps a package path to the functions in the binary
	// ("Func", "Type.Method"), inlined ones included; nil when the
	// binary's symbols could not be read (SymbolsErr says why).
	Symbols    map[string][]string `json:"symbols,omitempty"`
	SymbolsErr string              `json:"symbols_error,omitempty"`
}

// ErrNotGo says the file is not a Go binary (no build info).
var ErrNotGo = errors.New("gobin: not a Go binary")

// Read reads a Go binary.
func Read(r io.ReaderAt) (*Binary, error) {
	bi, err := buildinfo.Read(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotGo, err)
	}
	b := FromBuildInfo(bi)
	syms, err := readSymbols(r, bi.GoVersion)
	if err != nil {
		b.SymbolsErr = err.Error()
	} else {
		b.Symbols = syms
	}
	return b, nil
}

// FromBuildInfo converts debug build info.
func FromBuildInfo(bi *debug.BuildInfo) *Binary {
	b := &Binary{GoVersion: bi.GoVersion, Path: bi.Path, Main: Module{Path: bi.Main.Path, Version: bi.Main.Version, Sum: bi.Main.Sum}}
	for _, d := range bi.Deps {
		m := Module{Path: d.Path, Version: d.Version, Sum: d.Sum}
		if d.Replace != nil {
			m.Replace = &Module{Path: d.Replace.Path, Version: d.Replace.Version, Sum: d.Replace.Sum}
		}
		b.Modules = append(b.Modules, m)
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "GOOS":
			b.GOOS = s.Value
		case "GOARCH":
			b.GOARCH = s.Value
		}
	}
	return b
}

// pclntab magics (runtime/symtab.go, abi.PCLnTabMagic).
const (
	go118magic = 0xfffffff0
	go120magic = 0xfffffff1
)

// Indices into a function's pcdata and funcdata (internal/abi/symtab.go).
const (
	pcdataInlTreeIndex = 2
	funcdataInlTree    = 3
)

// maxFuncs bounds the function table; the largest binaries have a few
// hundred thousand functions.
const maxFuncs = 1 << 23

func readSymbols(r io.ReaderAt, goVersion string) (map[string][]string, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, errors.New("symbols are read from ELF binaries only")
	}
	sec := f.Section(".gopclntab")
	if sec == nil {
		sec = f.Section(".data.rel.ro.gopclntab")
	}
	if sec == nil || sec.Type == elf.SHT_NOBITS {
		return nil, errors.New("no pclntab section")
	}
	if sec.Size > 1<<31 {
		return nil, errors.New("pclntab too large")
	}
	tab, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("pclntab: %w", err)
	}
	p, err := parseHeader(tab, f.ByteOrder)
	if err != nil {
		return nil, err
	}
	funcSym := "go:func.*"
	if p.ver == 118 {
		funcSym = "go.func.*"
	}
	goFunc, found, err := elfSymbol(f, funcSym)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("no %s symbol", funcSym)
	}
	var gofuncData io.ReaderAt
	var gofuncBase uint64
	for _, pr := range f.Progs {
		if goFunc >= pr.Vaddr && goFunc < pr.Vaddr+pr.Filesz {
			gofuncData, gofuncBase = pr, pr.Vaddr
			break
		}
	}
	if gofuncData == nil {
		return nil, fmt.Errorf("%s is in no loaded segment", funcSym)
	}
	p.gofunc = io.NewSectionReader(gofuncData, int64(goFunc-gofuncBase), 1<<40)
	return p.symbols(goVersion)
}

type pcln struct {
	data      []byte
	order     binary.ByteOrder
	ver       int // 118 or 120
	minLC     uint64
	ptrSize   int
	nfunc     int
	funcnames []byte
	pctab     []byte
	functab   []byte // from pclnOffset: functab, then the _func records
	gofunc    io.ReaderAt
}

func parseHeader(tab []byte, order binary.ByteOrder) (*pcln, error) {
	if len(tab) < 8 {
		return nil, errors.New("pclntab: too short")
	}
	p := &pcln{data: tab, order: order}
	switch order.Uint32(tab) {
	case go120magic:
		p.ver = 120
	case go118magic:
		p.ver = 118
	default:
		return nil, fmt.Errorf("pclntab: magic %#x: built before Go 1.18 or not a Go binary", order.Uint32(tab))
	}
	p.minLC, p.ptrSize = uint64(tab[6]), int(tab[7])
	if p.ptrSize != 4 && p.ptrSize != 8 {
		return nil, fmt.Errorf("pclntab: pointer size %d", p.ptrSize)
	}
	if p.minLC == 0 || p.minLC > 8 {
		return nil, fmt.Errorf("pclntab: instruction size %d", p.minLC)
	}
	word := func(i int) (uint64, error) {
		off := 8 + i*p.ptrSize
		if off+p.ptrSize > len(tab) {
			return 0, errors.New("pclntab: header truncated")
		}
		if p.ptrSize == 4 {
			return uint64(order.Uint32(tab[off:])), nil
		}
		return order.Uint64(tab[off:]), nil
	}
	sub := func(i int) ([]byte, error) {
		off, err := word(i)
		if err != nil {
			return nil, err
		}
		if off > uint64(len(tab)) {
			return nil, fmt.Errorf("pclntab: table offset %d beyond the section", off)
		}
		return tab[off:], nil
	}
	n, err := word(0)
	if err != nil {
		return nil, err
	}
	if n > maxFuncs {
		return nil, fmt.Errorf("pclntab: %d functions", n)
	}
	p.nfunc = int(n)
	if p.funcnames, err = sub(3); err != nil {
		return nil, err
	}
	if p.pctab, err = sub(6); err != nil {
		return nil, err
	}
	if p.functab, err = sub(7); err != nil {
		return nil, err
	}
	if len(p.functab) < (p.nfunc+1)*8 {
		return nil, errors.New("pclntab: function table truncated")
	}
	return p, nil
}

func (p *pcln) name(off int64) (string, error) {
	if off < 0 || off >= int64(len(p.funcnames)) {
		return "", fmt.Errorf("pclntab: name offset %d out of range", off)
	}
	s := p.funcnames[off:]
	end := 0
	for end < len(s) && s[end] != 0 {
		end++
	}
	if end == len(s) {
		return "", errors.New("pclntab: unterminated function name")
	}
	return string(s[:end]), nil
}

func (p *pcln) u32(b []byte, off uint64) (uint32, error) {
	if off+4 > uint64(len(b)) || off+4 < off {
		return 0, errors.New("pclntab: function record truncated")
	}
	return p.order.Uint32(b[off:]), nil
}

// symbols walks the function table: each function's name and the names of
// the functions inlined into it.
func (p *pcln) symbols(goVersion string) (map[string][]string, error) {
	fixed := uint64(40) // _func before Go 1.20: no startLine
	if p.ver >= 120 {
		fixed = 44
	}
	set := map[[2]string]struct{}{}
	add := func(name string) error {
		pkg, sym, err := splitName(name)
		if err != nil {
			return err
		}
		set[[2]string{pkg, sym}] = struct{}{}
		return nil
	}
	for i := range p.nfunc {
		funcOff, err := p.u32(p.functab, uint64(i)*8+4)
		if err != nil {
			return nil, err
		}
		fo := uint64(funcOff)
		if fo >= uint64(len(p.functab)) {
			return nil, fmt.Errorf("pclntab: function %d at offset %d out of range", i, fo)
		}
		fn := p.functab[fo:]
		nameOff, err := p.u32(fn, 4)
		if err != nil {
			return nil, err
		}
		name, err := p.name(int64(int32(nameOff)))
		if err != nil {
			return nil, err
		}
		if err := add(name); err != nil {
			return nil, err
		}
		npcdata, err := p.u32(fn, 28)
		if err != nil {
			return nil, err
		}
		if fixed > uint64(len(fn)) {
			return nil, errors.New("pclntab: function record truncated")
		}
		nfuncdata := uint32(fn[fixed-1])
		if npcdata <= pcdataInlTreeIndex || nfuncdata <= funcdataInlTree {
			continue
		}
		pcOff, err := p.u32(fn, fixed+pcdataInlTreeIndex*4)
		if err != nil {
			return nil, err
		}
		treeOff, err := p.u32(fn, fixed+uint64(npcdata)*4+funcdataInlTree*4)
		if err != nil {
			return nil, err
		}
		if pcOff == 0 || treeOff == ^uint32(0) {
			continue
		}
		n, err := p.maxValue(pcOff)
		if err != nil {
			return nil, fmt.Errorf("pclntab: %s: inline index: %w", name, err)
		}
		if n < 0 {
			continue
		}
		calls, err := p.inlineTree(int64(treeOff), n+1)
		if err != nil {
			return nil, fmt.Errorf("pclntab: %s: inline tree: %w", name, err)
		}
		for _, c := range calls {
			if err := add(c); err != nil {
				return nil, err
			}
		}
	}
	out := map[string][]string{}
	for k := range set {
		if k[0] == "" {
			continue
		}
		out[k[0]] = append(out[k[0]], k[1])
	}
	for _, v := range out {
		slices.Sort(v)
	}
	return out, nil
}

// maxInlineEntries bounds one function's inline tree.
const maxInlineEntries = 1 << 16

// maxValue decodes a pc-value table (runtime/symtab.go step) and returns
// its largest value; -1 for none.
func (p *pcln) maxValue(off uint32) (int, error) {
	if uint64(off) >= uint64(len(p.pctab)) {
		return 0, errors.New("pc-value table out of range")
	}
	b := p.pctab[off:]
	val, max := int32(-1), int32(-1)
	first := true
	for steps := 0; ; steps++ {
		if steps > 1<<20 {
			return 0, errors.New("pc-value table does not end")
		}
		uv, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, errors.New("pc-value table truncated")
		}
		b = b[n:]
		if uv == 0 && !first {
			break
		}
		first = false
		if uv&1 != 0 {
			val += int32(^(uv >> 1))
		} else {
			val += int32(uv >> 1)
		}
		if _, n = binary.Uvarint(b); n <= 0 {
			return 0, errors.New("pc-value table truncated")
		}
		b = b[n:]
		if val > max {
			max = val
		}
	}
	if max >= maxInlineEntries {
		return 0, fmt.Errorf("%d inlined calls", max)
	}
	return int(max), nil
}

func (p *pcln) inlineTree(off int64, n int) ([]string, error) {
	size := 16 // inlinedCall since Go 1.20
	nameAt := 4
	if p.ver < 120 {
		size, nameAt = 20, 12
	}
	buf := make([]byte, n*size)
	if _, err := p.gofunc.ReadAt(buf, off); err != nil {
		return nil, err
	}
	out := make([]string, 0, n)
	for i := range n {
		nameOff := int32(p.order.Uint32(buf[i*size+nameAt:]))
		name, err := p.name(int64(nameOff))
		if err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	return out, nil
}

// splitName splits a function's linker name into its package path and the
// symbol the vulnerability database uses ("Func", "Type.Method"), as
// govulncheck does.
func splitName(name string) (pkg, sym string, err error) {
	s := &gosym.Sym{Name: name}
	sym = s.BaseName()
	if r := s.ReceiverName(); r != "" {
		if strings.HasPrefix(r, "(*") {
			r = strings.Trim(r, "(*)")
		}
		sym = r + "." + sym
	}
	pkg = s.PackageName()
	if pkg != "" {
		if pkg, err = url.PathUnescape(pkg); err != nil {
			return "", "", fmt.Errorf("pclntab: function %q: %w", name, err)
		}
	}
	return pkg, sym, nil
}

// elfSymbol finds one symbol's value by scanning the symbol table in
// place: decoding every symbol (elf.File.Symbols) of a large binary costs
// tens of megabytes for the one name needed.
func elfSymbol(f *elf.File, name string) (uint64, bool, error) {
	var symtab *elf.Section
	for _, sec := range f.Sections {
		if sec.Type == elf.SHT_SYMTAB {
			symtab = sec
			break
		}
	}
	if symtab == nil {
		return 0, false, errors.New("the binary has no symbol table (stripped)")
	}
	if int(symtab.Link) >= len(f.Sections) || symtab.Link == 0 {
		return 0, false, errors.New("symbol table: bad string table link")
	}
	strs := f.Sections[symtab.Link]
	if symtab.Size > 1<<31 || strs.Size > 1<<31 {
		return 0, false, errors.New("symbol table too large")
	}
	syms, err := symtab.Data()
	if err != nil {
		return 0, false, fmt.Errorf("symbol table: %w", err)
	}
	names, err := strs.Data()
	if err != nil {
		return 0, false, fmt.Errorf("symbol table: %w", err)
	}
	want := []byte(name + "\x00")
	size, valueAt := 24, 8 // Elf64_Sym: name(4) info other shndx(2) value(8) size(8)
	if f.Class == elf.ELFCLASS32 {
		size, valueAt = 16, 4 // Elf32_Sym: name(4) value(4) size(4) info other shndx(2)
	}
	for off := size; off+size <= len(syms); off += size { // entry 0 is null
		n := uint64(f.ByteOrder.Uint32(syms[off:]))
		if n >= uint64(len(names)) || !bytes.HasPrefix(names[n:], want) {
			continue
		}
		if f.Class == elf.ELFCLASS32 {
			return uint64(f.ByteOrder.Uint32(syms[off+valueAt:])), true, nil
		}
		return f.ByteOrder.Uint64(syms[off+valueAt:]), true, nil
	}
	return 0, false, nil
}
