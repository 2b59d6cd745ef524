package spec

import (
	"sort"
	"strings"
)

// FieldError is one problem with one field of a document.
type FieldError struct {
	Path string // dotted field path from the object root, e.g. spec.optimizer.lr
	Msg  string // what is wrong and what is allowed
}

func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Errors is every problem found in a document, sorted by field path. Callers
// that show problems one per line get them with errors.As.
type Errors []*FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Lines returns one message per problem.
func (es Errors) Lines() []string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return lines
}

func (es *Errors) add(path, format string, args ...any) {
	*es = append(*es, &FieldError{Path: path, Msg: sprintf(format, args...)})
}

// err returns nil for no problems, so that a nil Errors never becomes a
// non-nil error interface.
func (es Errors) err() error {
	if len(es) == 0 {
		return nil
	}
	sort.SliceStable(es, func(i, j int) bool { return es[i].Path < es[j].Path })
	return es
}
