package spec

import "github.com/ternml/tern/pkg/data"

// Source is the data section in the form pkg/data loads. The caller fills
// SeqLen from the model. Kind text has no file to read: data.Source cannot
// hold it, and the caller reads Text instead.
func (d *DataSpec) Source() data.Source {
	val := d.ValFraction
	if val == 0 {
		// In the spec 0 means no validation split; pkg/data spells that as
		// a negative fraction (its 0 means "use the default").
		val = -1
	}
	return data.Source{
		Kind:        d.Kind,
		Path:        d.Path,
		Include:     append([]string(nil), d.Include...),
		Exclude:     append([]string(nil), d.Exclude...),
		Tokenizer:   d.Tokenizer,
		ValFraction: val,
		CacheDir:    d.CacheDir,
	}
}
