package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	goyaml "go.yaml.in/yaml/v2"
	"sigs.k8s.io/yaml"
)

// MaxDocumentBytes bounds a job spec document. A spec holds settings, not
// data: even one with its corpus inline (spec.data.kind text) is far
// smaller, and the coordinator keeps a resolved spec in one etcd value.
// The bound keeps a mistaken argument (a corpus or a binary passed as -f)
// from being read and decoded whole.
const MaxDocumentBytes = 1 << 20

// errTooLarge is the message for a document over MaxDocumentBytes; size
// says how large it is, as far as known.
func errTooLarge(size string) error {
	return fmt.Errorf("the job spec is %s, over the limit of %d bytes (1 MiB): a spec holds settings, not data; put a large corpus in a file and point spec.data.path at it", size, MaxDocumentBytes)
}

// Load reads a TrainingJob from a YAML (or JSON) file, applies the --set
// overrides, fills defaults and validates it. Problems in the document come
// back as Errors (all of them) wrapped with the file name.
func Load(path string, sets []string) (*TrainingJob, error) {
	b, err := readLimited(path)
	if err != nil {
		return nil, err
	}
	j, err := parse(b, sets, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return j, nil
}

// Parse is Load for a document already in memory.
//
// The document is decoded into a generic tree first so that every problem
// (unknown fields at any depth, wrong types) can be reported with its full
// path; only a tree that matches the schema is decoded into the struct.
// Defaults are then filled for fields the document leaves out, and the
// result is validated.
func Parse(b []byte, sets []string) (*TrainingJob, error) {
	return parse(b, sets, "")
}

// parse is Parse with the directory of the file the document came from: a
// relative spec.data.path written in the file is taken relative to it (as
// Compose and Kustomize do), so a job file and its corpus can move together
// and the job runs from any working directory. A relative path given with
// --set stays relative to the working directory, like any other argument.
func parse(b []byte, sets []string, baseDir string) (*TrainingJob, error) {
	if len(b) > MaxDocumentBytes {
		return nil, errTooLarge(fmt.Sprintf("%d bytes", len(b)))
	}
	js, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		var nf *json.UnsupportedValueError
		if errors.As(err, &nf) {
			// YAML has .nan and .inf, JSON does not: name the field
			// rather than echo the encoder's complaint.
			return nil, Errors{nonFinite(b)}
		}
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	var tree any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("parse YAML: %w", err)
	}
	root, ok := tree.(map[string]any)
	if !ok {
		if tree == nil {
			return nil, errors.New("empty document: expected a TrainingJob with apiVersion, kind, metadata and spec")
		}
		return nil, fmt.Errorf("document must be a mapping with apiVersion, kind, metadata and spec, got %s", describe(tree))
	}

	if baseDir != "" {
		resolveDataPath(root, baseDir)
		resolveInitPath(root, baseDir)
	}
	var errs Errors
	origin := map[string]string{} // canonical path -> the --set that wrote it
	for _, s := range sets {
		p, ferr := applySet(root, s)
		if ferr != nil {
			if ferr.Path != "" {
				ferr.Msg += fmt.Sprintf(" (from --set %s)", s)
			}
			errs = append(errs, ferr)
			continue
		}
		origin[p] = s
	}
	// Problems found from here on are about the document as overridden;
	// say which ones come from a --set rather than the file.
	fromSet := func(es Errors) {
		for _, e := range es {
			if s, ok := origin[e.Path]; ok {
				e.Msg += fmt.Sprintf(" (from --set %s)", s)
			}
		}
	}
	n := len(errs)
	checkValue("", reflect.TypeOf(TrainingJob{}), root, &errs)
	fromSet(errs[n:])

	norm, err := json.Marshal(root)
	if err != nil {
		return nil, fmt.Errorf("re-encode document: %w", err)
	}
	var j TrainingJob
	if err := json.Unmarshal(norm, &j); err != nil {
		// checkValue accepted the tree, so this is a bug in the schema check,
		// not in the user's document; say so rather than blame the user.
		return nil, fmt.Errorf("decode checked document (schema check missed this): %w", err)
	}
	present := map[string]bool{}
	collectPaths("", root, present)
	j.applyDefaults(func(p string) bool { return present[p] })
	if err := j.Validate(); err != nil {
		var ves Errors
		if !errors.As(err, &ves) {
			return nil, err
		}
		// A field dropped for a schema problem was replaced by its default
		// or left empty; what Validate says about it would only repeat or
		// confuse the schema error.
		var fresh Errors
		for _, ve := range ves {
			if !coveredBy(ve.Path, errs) {
				fresh = append(fresh, ve)
			}
		}
		fromSet(fresh)
		errs = append(errs, fresh...)
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return &j, nil
}

// nonFinite finds the first .nan or .inf in a YAML document that did
// decode, and says where it is.
func nonFinite(b []byte) *FieldError {
	var tree any
	if goyaml.Unmarshal(b, &tree) == nil {
		if path, v, ok := findNonFinite("", tree); ok {
			return &FieldError{Path: path, Msg: fmt.Sprintf("got %v: numbers in a job spec must be finite", v)}
		}
	}
	return &FieldError{Msg: "the document holds .nan or .inf: every number in a job spec must be finite"}
}

func findNonFinite(path string, v any) (string, float64, bool) {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return path, x, true
		}
	case map[any]any:
		keys := make([]string, 0, len(x))
		byKey := map[string]any{}
		for k, c := range x {
			ks := fmt.Sprint(k)
			keys = append(keys, ks)
			byKey[ks] = c
		}
		slices.Sort(keys)
		for _, k := range keys {
			if p, f, ok := findNonFinite(joinPath(path, k), byKey[k]); ok {
				return p, f, true
			}
		}
	case []any:
		for i, c := range x {
			if p, f, ok := findNonFinite(fmt.Sprintf("%s[%d]", path, i), c); ok {
				return p, f, true
			}
		}
	}
	return "", 0, false
}

// readLimited reads a spec file, refusing one over MaxDocumentBytes
// without reading it all (it may be a device or a pipe that never ends).
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read job spec: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxDocumentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read job spec %s: %w", path, err)
	}
	if len(b) > MaxDocumentBytes {
		size := fmt.Sprintf("more than %d bytes", MaxDocumentBytes)
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fmt.Sprintf("%d bytes", fi.Size())
		}
		return nil, fmt.Errorf("%s: %w", path, errTooLarge(size))
	}
	return b, nil
}

// coveredBy reports whether a path is at or under one already reported.
func coveredBy(path string, errs Errors) bool {
	for _, e := range errs {
		if e.Path == "" {
			continue
		}
		if path == e.Path || strings.HasPrefix(path, e.Path+".") || strings.HasPrefix(path, e.Path+"[") {
			return true
		}
	}
	return false
}

// collectPaths records the path of every field the document sets.
func collectPaths(prefix string, v any, out map[string]bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return
	}
	for k, c := range m {
		p := joinPath(prefix, k)
		out[p] = true
		collectPaths(p, c, out)
	}
}

// describe names a decoded JSON value's type for error messages, with the
// value when it is short.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		if len(x) > 40 {
			x = x[:40] + "..."
		}
		return fmt.Sprintf("string %q", x)
	case json.Number:
		return "number " + x.String()
	case bool:
		return fmt.Sprintf("boolean %t", x)
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// checkValue checks a decoded value against the schema type t, reporting
// problems under path. It normalises in place what JSON decoding would
// otherwise reject or misread: nulls are removed (a field written as
// "eval:" with nothing after it is absent) and integral numbers written
// as 1e3 become 1000. It returns the normalised value and whether it fits
// the schema; a parent drops a value that does not, so the rest of the
// document can still be decoded and validated.
func checkValue(path string, t reflect.Type, v any, errs *Errors) (any, bool) {
	if t == reservedType {
		if _, ok := v.(map[string]any); !ok {
			errs.add(path, "must be an object, got %s", describe(v))
			return v, false
		}
		return v, true
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			errs.add(path, "must be an object with fields (%s), got %s", strings.Join(fieldNames(t), ", "), describe(v))
			return v, false
		}
		for _, k := range sortedKeys(m) {
			f, ok := fieldByName(t, k)
			if !ok {
				errs.add(joinPath(path, k), "%s", unknownField(t, k))
				delete(m, k)
				continue
			}
			if m[k] == nil {
				delete(m, k)
				continue
			}
			nv, ok := checkValue(joinPath(path, k), f.typ, m[k], errs)
			if !ok {
				delete(m, k)
				continue
			}
			m[k] = nv
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			hint := ""
			switch v.(type) {
			case json.Number, bool:
				hint = " (quote it to make it a string)"
			}
			errs.add(path, "must be a string, got %s%s", describe(v), hint)
			return v, false
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			errs.add(path, "must be a boolean (true or false), got %s", describe(v))
			return v, false
		}
	case reflect.Int, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			errs.add(path, "must be an integer, got %s", describe(v))
			return v, false
		}
		if _, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
			return v, true
		}
		f, err := strconv.ParseFloat(n.String(), 64)
		if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			errs.add(path, "must be an integer, got %s", n)
			return v, false
		}
		return json.Number(strconv.FormatInt(int64(f), 10)), true
	case reflect.Uint64:
		n, ok := v.(json.Number)
		if !ok {
			errs.add(path, "must be a non-negative integer, got %s", describe(v))
			return v, false
		}
		if _, err := strconv.ParseUint(n.String(), 10, 64); err == nil {
			return v, true
		}
		f, err := strconv.ParseFloat(n.String(), 64)
		if err != nil || f != math.Trunc(f) || f < 0 || f > 1<<53 {
			errs.add(path, "must be a non-negative integer, got %s", n)
			return v, false
		}
		return json.Number(strconv.FormatUint(uint64(f), 10)), true
	case reflect.Float64:
		n, ok := v.(json.Number)
		if !ok {
			errs.add(path, "must be a number, got %s", describe(v))
			return v, false
		}
		if f, err := strconv.ParseFloat(n.String(), 64); err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			errs.add(path, "must be a finite number, got %s", n)
			return v, false
		}
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			errs.add(path, "must be a list (write [a, b] or one item per line with '- '), got %s", describe(v))
			return v, false
		}
		all := true
		for i := range l {
			nv, ok := checkValue(fmt.Sprintf("%s[%d]", path, i), t.Elem(), l[i], errs)
			l[i] = nv
			all = all && ok
		}
		return l, all
	default:
		errs.add(path, "field of unsupported type %s in the schema", t)
		return v, false
	}
	return v, true
}

// applySet applies one --set key=value to the document tree and returns the
// canonical path it wrote, or the problem with the field path it is about.
//
// Values are YAML scalars (1e-3, true, 12), except that a string field takes
// the text as written (so data.include=*.go works although '*' starts a
// YAML alias) and a list field takes [a,b] split at commas.
func applySet(root map[string]any, s string) (string, *FieldError) {
	key, val, ok := strings.Cut(s, "=")
	key = strings.TrimSpace(key)
	if !ok || key == "" {
		return "", &FieldError{Msg: fmt.Sprintf("--set %s: expected FIELD=VALUE, e.g. optimizer.lr=1e-3", s)}
	}
	path, t, _, ferr := resolvePath(key)
	if ferr != nil {
		return "", ferr
	}
	if path == "" {
		return "", &FieldError{Msg: fmt.Sprintf("--set %s: cannot replace the whole document", s)}
	}
	v, err := setValue(t, val)
	if err != nil {
		return "", &FieldError{Path: path, Msg: err.Error()}
	}
	segs := strings.Split(path, ".")
	m := root
	for i, seg := range segs[:len(segs)-1] {
		next, ok := m[seg].(map[string]any)
		if !ok {
			if m[seg] != nil {
				p := strings.Join(segs[:i+1], ".")
				return "", &FieldError{Path: p, Msg: fmt.Sprintf("is %s in the document, not an object, so %s cannot be set", describe(m[seg]), path)}
			}
			next = map[string]any{}
			m[seg] = next
		}
		m = next
	}
	m[segs[len(segs)-1]] = v
	return path, nil
}

func setValue(t reflect.Type, val string) (any, error) {
	switch {
	case t.Kind() == reflect.String:
		return unquote(strings.TrimSpace(val)), nil
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		v := strings.TrimSpace(val)
		if !strings.HasPrefix(v, "[") || !strings.HasSuffix(v, "]") {
			return nil, fmt.Errorf("a list must be written [a,b] (or [] for empty), got %q", val)
		}
		inner := strings.TrimSpace(v[1 : len(v)-1])
		out := []any{}
		if inner == "" {
			return out, nil
		}
		for _, item := range strings.Split(inner, ",") {
			out = append(out, unquote(strings.TrimSpace(item)))
		}
		return out, nil
	}
	js, err := yaml.YAMLToJSON([]byte(val))
	if err != nil {
		return nil, fmt.Errorf("value %q is not a YAML value: %w", val, err)
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("value %q: %w", val, err)
	}
	return v, nil
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		return s[1 : len(s)-1]
	}
	return s
}

// resolveDataPath makes a relative spec.data.path in the document relative to
// baseDir. Anything that is not a well-formed string is left for the schema
// check to report.
func resolveDataPath(root map[string]any, baseDir string) {
	sp, _ := root["spec"].(map[string]any)
	d, _ := sp["data"].(map[string]any)
	p, ok := d["path"].(string)
	if !ok || p == "" || filepath.IsAbs(p) {
		return
	}
	d["path"] = filepath.Join(baseDir, p)
}

// resolveInitPath does for the directory of spec.model.init: hf:DIR what
// resolveDataPath does for spec.data.path, so a job file and the weights
// it starts from can move together.
func resolveInitPath(root map[string]any, baseDir string) {
	sp, _ := root["spec"].(map[string]any)
	m, _ := sp["model"].(map[string]any)
	v, ok := m["init"].(string)
	if !ok {
		return
	}
	dir, ok := InitSource(v).HFDir()
	if !ok || filepath.IsAbs(dir) {
		return
	}
	m["init"] = InitHFPrefix + filepath.Join(baseDir, dir)
}
