package netpol

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// DiffLines compares two renders line by line and returns the lines only
// in want ("- ", missing from what is applied) and only in got ("+ ",
// applied but not wanted), in order. Comments are ignored: they carry
// versions, not rules. Empty means the two agree.
func DiffLines(want, got string) []string {
	w, g := ruleLines(want), ruleLines(got)
	// Longest common subsequence: renders are small (a host's table),
	// and an ordered diff reads better than two sets.
	n, m := len(w), len(g)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if w[i] == g[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && w[i] == g[j]:
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			out = append(out, "+ "+g[j])
			j++
		default:
			out = append(out, "- "+w[i])
			i++
		}
	}
	return out
}

func ruleLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, l)
	}
	return out
}

// DiffObjects compares Kubernetes objects (YAML streams): the objects we
// render against those found (a directory of files, or kubectl get -o
// yaml). Objects are matched by kind, namespace and name; only objects we
// manage (labelled app.kubernetes.io/managed-by: rampart) count among
// those found, so other policies in the files are not reported.
func DiffObjects(want string, got []io.Reader) ([]string, error) {
	w, err := objects(strings.NewReader(want), false)
	if err != nil {
		return nil, fmt.Errorf("rendered: %w", err)
	}
	g := map[string]string{}
	for i, r := range got {
		os, err := objects(r, true)
		if err != nil {
			return nil, fmt.Errorf("input %d: %w", i+1, err)
		}
		for k, v := range os {
			g[k] = v
		}
	}
	var out []string
	for _, k := range sortedStrings(w) {
		gv, ok := g[k]
		switch {
		case !ok:
			out = append(out, "missing: "+k)
		case gv != w[k]:
			out = append(out, "differs: "+k)
		}
	}
	for _, k := range sortedStrings(g) {
		if _, ok := w[k]; !ok {
			out = append(out, "not wanted: "+k)
		}
	}
	return out, nil
}

// objects reads a YAML stream of objects (a kind: List is opened) and
// returns "kind namespace/name" → its spec, normalised.
func objects(r io.Reader, onlyOurs bool) (map[string]string, error) {
	out := map[string]string{}
	dec := yaml.NewDecoder(r)
	for {
		var o struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name      string            `yaml:"name"`
				Namespace string            `yaml:"namespace"`
				Labels    map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec  any         `yaml:"spec"`
			Items []yaml.Node `yaml:"items"`
		}
		err := dec.Decode(&o)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if o.Kind == "List" || strings.HasSuffix(o.Kind, "List") {
			for _, it := range o.Items {
				b, err := yaml.Marshal(&it)
				if err != nil {
					return nil, err
				}
				m, err := objects(bytes.NewReader(b), onlyOurs)
				if err != nil {
					return nil, err
				}
				for k, v := range m {
					out[k] = v
				}
			}
			continue
		}
		if o.Kind == "" || (onlyOurs && o.Metadata.Labels["app.kubernetes.io/managed-by"] != "rampart") {
			continue
		}
		spec, err := yaml.Marshal(o.Spec)
		if err != nil {
			return nil, err
		}
		out[o.Kind+" "+o.Metadata.Namespace+"/"+o.Metadata.Name] = string(spec)
	}
}

func sortedStrings(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
