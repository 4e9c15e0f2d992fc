package deptest

import (
	"go/importer"
	"go/token"
	"go/types"
	"io"
	"os"
	"strings"
	"testing"
)

// Every type in the SDK's exported API is one a user can name: no exported
// function, method, field, variable or interface method of sdk/... takes,
// returns or holds a type defined under internal/. (A type alias to an
// internal type counts: the user could not write the type's name.)
func TestSDKAPINamesNoInternalType(t *testing.T) {
	exports := map[string]string{}
	for line := range strings.Lines(goList(t, "-export", "-deps", "-f", "{{.ImportPath}}\t{{.Export}}", "./sdk/...")) {
		path, file, _ := strings.Cut(strings.TrimSpace(line), "\t")
		exports[path] = file
	}
	imp := importer.ForCompiler(token.NewFileSet(), "gc", func(path string) (io.ReadCloser, error) {
		return os.Open(exports[path])
	})
	w := &apiWalker{t: t, seen: map[*types.Named]bool{}}
	for _, path := range strings.Fields(goList(t, "./sdk/...")) {
		pkg, err := imp.Import(path)
		if err != nil {
			t.Fatalf("importing %s: %v", path, err)
		}
		scope := pkg.Scope()
		for _, name := range scope.Names() {
			obj := scope.Lookup(name)
			if !obj.Exported() {
				continue
			}
			where := strings.TrimPrefix(path, module+"/") + "." + name
			w.walk(obj.Type(), where) // for a type: what it is, its exported fields and methods
		}
	}
}

type apiWalker struct {
	t    *testing.T
	seen map[*types.Named]bool // the SDK's own types, walked once
}

func internalPath(path string) bool {
	return strings.Contains(path, "/internal/") || strings.HasSuffix(path, "/internal")
}

// walk checks t, reached from where (the exported name that uses it).
func (w *apiWalker) walk(t types.Type, where string) {
	switch t := t.(type) {
	case *types.Alias:
		if obj := t.Obj(); obj.Pkg() != nil && internalPath(obj.Pkg().Path()) {
			w.t.Errorf("%s: uses %s.%s, which a user cannot name", where, obj.Pkg().Path(), obj.Name())
			return
		}
		w.walk(types.Unalias(t), where)
	case *types.Named:
		obj := t.Obj()
		if obj.Pkg() == nil {
			return // error, comparable
		}
		if internalPath(obj.Pkg().Path()) {
			w.t.Errorf("%s: uses %s.%s, which a user cannot name", where, obj.Pkg().Path(), obj.Name())
			return
		}
		for i := range t.TypeArgs().Len() {
			w.walk(t.TypeArgs().At(i), where)
		}
		if !strings.HasPrefix(obj.Pkg().Path(), module+"/sdk") || !obj.Exported() || w.seen[t] {
			return // the standard library, go-spiffe; opaque to the user; or done
		}
		w.seen[t] = true
		name := strings.TrimPrefix(obj.Pkg().Path(), module+"/") + "." + obj.Name()
		w.walk(t.Underlying(), name)
		for m := range types.NewMethodSet(types.NewPointer(t)).Methods() {
			if m.Obj().Exported() {
				w.walk(m.Type(), name+"."+m.Obj().Name())
			}
		}
	case *types.Pointer:
		w.walk(t.Elem(), where)
	case *types.Slice:
		w.walk(t.Elem(), where)
	case *types.Array:
		w.walk(t.Elem(), where)
	case *types.Chan:
		w.walk(t.Elem(), where)
	case *types.Map:
		w.walk(t.Key(), where)
		w.walk(t.Elem(), where)
	case *types.Signature:
		for v := range t.Params().Variables() {
			w.walk(v.Type(), where)
		}
		for v := range t.Results().Variables() {
			w.walk(v.Type(), where)
		}
	case *types.Struct:
		for f := range t.Fields() {
			if f.Exported() {
				w.walk(f.Type(), where+"."+f.Name())
			}
		}
	case *types.Interface:
		for m := range t.Methods() {
			if m.Exported() {
				w.walk(m.Type(), where+"."+m.Name())
			}
		}
	}
}
