package data

import (
	"fmt"
	"io"
	"time"
)

// progressInterval limits redraws so that a progress line written to a log
// file (not a terminal) stays a few lines per minute of work.
const progressInterval = 500 * time.Millisecond

// progressBar draws "label  done/total MB  pct%  rate MB/s" on one line,
// redrawn with '\r'. A nil writer draws nothing.
type progressBar struct {
	w     io.Writer
	label string
	total int64
	done  int64
	start time.Time
	last  time.Time
	now   func() time.Time
}

func newProgressBar(w io.Writer, label string, total int64) *progressBar {
	p := &progressBar{w: w, label: label, total: total, now: time.Now}
	p.start = p.now()
	p.last = p.start
	return p
}

func (p *progressBar) add(n int64) {
	p.done += n
	if p.w == nil {
		return
	}
	if t := p.now(); t.Sub(p.last) >= progressInterval {
		p.last = t
		p.draw("\r")
	}
}

func (p *progressBar) finish() {
	if p.w != nil {
		p.draw("\r")
		fmt.Fprintln(p.w)
	}
}

func (p *progressBar) draw(prefix string) {
	const mb = 1 << 20
	el := p.now().Sub(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(p.done) / mb / el
	}
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(p.done) / float64(p.total)
	}
	fmt.Fprintf(p.w, "%s%s %7.1f/%.1f MB %5.1f%% %6.1f MB/s", prefix, p.label,
		float64(p.done)/mb, float64(p.total)/mb, pct, rate)
}
