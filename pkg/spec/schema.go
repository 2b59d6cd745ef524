package spec

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
)

func sprintf(format string, args ...any) string {
	if len(args) == 0 {
		return format
	}
	return fmt.Sprintf(format, args...)
}

// fieldInfo describes one struct field of the schema as the document sees it.
type fieldInfo struct {
	name   string // JSON name
	goName string // Go struct field name
	index  int    // struct field index
	// typ is the schema type; for an optional section (a pointer to a
	// struct in Go) it is the struct, and ptr is set.
	typ reflect.Type
	ptr bool
	// def is the default tag: a JSON literal, "derived" (computed from other
	// fields, explained in desc), "reference" (an optimizer's reference
	// value from pkg/optim, see optimizer.go), or empty for none.
	def  string
	desc string
}

var reservedType = reflect.TypeOf(Reserved(nil))

// fieldsOf lists the document fields of a struct type in declaration order.
func fieldsOf(t reflect.Type) []fieldInfo {
	var out []fieldInfo
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "" || name == "-" {
			continue
		}
		typ, ptr := sf.Type, false
		if typ.Kind() == reflect.Pointer && typ.Elem().Kind() == reflect.Struct {
			typ, ptr = typ.Elem(), true
		}
		out = append(out, fieldInfo{name: name, goName: sf.Name, index: i, typ: typ, ptr: ptr, def: sf.Tag.Get("default"), desc: sf.Tag.Get("desc")})
	}
	return out
}

func fieldByName(t reflect.Type, name string) (fieldInfo, bool) {
	for _, f := range fieldsOf(t) {
		if f.name == name {
			return f, true
		}
	}
	return fieldInfo{}, false
}

func fieldNames(t reflect.Type) []string {
	fs := fieldsOf(t)
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	return names
}

// typeName is the schema type as explain and error messages show it.
func typeName(t reflect.Type) string {
	if t == reservedType {
		return "object (reserved)"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint64:
		return "integer"
	case reflect.Float64, reflect.Float32:
		return "number"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice:
		return "[]" + typeName(t.Elem())
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return t.String()
}

func joinPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// unknownField builds the message for a field the schema does not have,
// with the allowed names and, when one is close, a suggestion.
func unknownField(t reflect.Type, name string) string {
	names := fieldNames(t)
	msg := fmt.Sprintf("unknown field %q (allowed: %s)", name, strings.Join(names, ", "))
	if s := closest(name, names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return msg
}

// closest returns the candidate within edit distance 2 of name (case
// ignored), or "" if none is.
func closest(name string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(name), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// resolvePath finds the schema field at a dotted path. A path that does not
// start with a top-level field is taken relative to spec, so "optimizer.lr"
// and "spec.optimizer.lr" name the same field. The returned canonical path
// always starts at the root. An empty path is the root.
func resolvePath(path string) (canonical string, t reflect.Type, f *fieldInfo, err *FieldError) {
	t = reflect.TypeOf(TrainingJob{})
	if path == "" {
		return "", t, nil, nil
	}
	segs := strings.Split(path, ".")
	if _, ok := fieldByName(t, segs[0]); !ok {
		if _, inSpec := fieldByName(reflect.TypeOf(JobSpec{}), segs[0]); inSpec {
			segs = append([]string{"spec"}, segs...)
		}
	}
	var cur string
	for _, s := range segs {
		if s == "" {
			return "", nil, nil, &FieldError{Path: path, Msg: "field path has an empty segment"}
		}
		if t.Kind() != reflect.Struct {
			return "", nil, nil, &FieldError{Path: joinPath(cur, s), Msg: fmt.Sprintf("field %q does not exist: %s is a %s, not an object with fields", s, displayPath(cur), typeName(t))}
		}
		fi, ok := fieldByName(t, s)
		if !ok {
			return "", nil, nil, &FieldError{Path: joinPath(cur, s), Msg: unknownField(t, s)}
		}
		cur = joinPath(cur, s)
		t = fi.typ
		f = &fi
	}
	return cur, t, f, nil
}

func displayPath(p string) string {
	if p == "" {
		return "the document root"
	}
	return p
}

// sortedKeys returns a map's keys in order, so problems are reported
// deterministically.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
