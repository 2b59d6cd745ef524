package cuda

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/ebitengine/purego"
)

// A library is one shared object the device needs, named by the sonames to
// try (newest first) and the subdirectories that the pip wheels PyTorch
// installs (nvidia-cublas, nvidia-cuda-nvrtc, ...) keep it in.
type library struct {
	what   string   // "CUDA driver", "NVRTC", "cuBLAS"
	names  []string // sonames, most specific first
	pipSub []string // directories under site-packages/nvidia/
}

var (
	libDriver = library{what: "CUDA driver", names: []string{"libcuda.so.1", "libcuda.so"}}
	libNVRTC  = library{what: "NVRTC", names: []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"},
		pipSub: []string{"cu13/lib", "cuda_nvrtc/lib", "cu12/lib"}}
	libCuBLAS = library{what: "cuBLAS", names: []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"},
		pipSub: []string{"cu13/lib", "cublas/lib", "cu12/lib"}}
)

// EnvLibDir names a directory searched before any other for all three
// libraries.
const EnvLibDir = "TERN_CUDA_LIB_DIR"

// standardDirs are the places CUDA installs put its libraries, in the order
// searched after LD_LIBRARY_PATH. Globs are expanded.
var standardDirs = []string{
	"/usr/local/nvidia/lib64",
	"/usr/local/nvidia/lib",
	"/usr/lib/x86_64-linux-gnu",
	"/usr/lib64",
	"/usr/lib/wsl/lib",
	"/usr/local/cuda/lib64",
	"/usr/local/cuda/targets/x86_64-linux/lib",
	"/usr/local/cuda-*/targets/x86_64-linux/lib",
	"/usr/local/cuda-*/lib64",
}

// sitePackageGlobs are the Python package roots searched for pip's nvidia/
// directory (where PyTorch's CUDA wheels put cuBLAS and NVRTC).
var sitePackageGlobs = []string{
	"$VIRTUAL_ENV/lib/python3*/site-packages",
	"/opt/*/.venv/lib/python3*/site-packages",
	"/opt/*/lib/python3*/site-packages",
	"/usr/local/lib/python3*/dist-packages",
	"/usr/local/lib/python3*/site-packages",
	"/usr/lib/python3/dist-packages",
	"$HOME/.local/lib/python3*/site-packages",
}

// searchDirs lists, for lib, every directory to look in, in order: the
// override, LD_LIBRARY_PATH, the standard directories, then the pip wheel
// directories. getenv and glob are parameters so tests can drive them.
func searchDirs(lib library, getenv func(string) string, glob func(string) []string) []string {
	var dirs []string
	seen := map[string]bool{}
	add := func(d string) {
		if d == "" || seen[d] {
			return
		}
		seen[d] = true
		dirs = append(dirs, d)
	}
	expand := func(pattern string) {
		unset := false
		p := os.Expand(pattern, func(k string) string {
			v := getenv(k)
			unset = unset || v == ""
			return v
		})
		if unset {
			return // a variable the pattern needs is unset
		}
		if !strings.ContainsAny(p, "*?[") {
			add(p)
			return
		}
		m := glob(p)
		sort.Sort(sort.Reverse(sort.StringSlice(m))) // newest version first
		for _, d := range m {
			add(d)
		}
	}
	add(getenv(EnvLibDir))
	for _, d := range filepath.SplitList(getenv("LD_LIBRARY_PATH")) {
		add(d)
	}
	for _, d := range standardDirs {
		expand(d)
	}
	for _, sp := range sitePackageGlobs {
		for _, sub := range lib.pipSub {
			expand(sp + "/nvidia/" + sub)
		}
	}
	return dirs
}

// candidates lists the paths to dlopen for lib, in order: each soname bare
// (so the dynamic linker's own search, ldconfig cache included, comes
// first), then each soname in each directory that has it.
func candidates(lib library, dirs []string, exists func(string) bool) []string {
	out := append([]string(nil), lib.names...)
	for _, d := range dirs {
		for _, n := range lib.names {
			if p := filepath.Join(d, n); exists(p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// LibraryError says which library could not be loaded, what was tried and
// where it was looked for.
type LibraryError struct {
	What  string
	Names []string
	Dirs  []string
	Err   error // the last dlopen error
}

func (e *LibraryError) Error() string {
	return fmt.Sprintf("load %s: none of %s could be opened (looked in the dynamic linker's path, then %s); last error: %v; set %s to the directory that holds it",
		e.What, strings.Join(e.Names, ", "), strings.Join(e.Dirs, ", "), e.Err, EnvLibDir)
}

func (e *LibraryError) Unwrap() error { return e.Err }

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func globDirs(p string) []string {
	m, _ := filepath.Glob(p)
	return m
}

// open dlopens lib from the first candidate that loads and returns its
// handle and the path that worked.
func open(lib library) (uintptr, string, error) {
	dirs := searchDirs(lib, os.Getenv, globDirs)
	var last error
	for _, p := range candidates(lib, dirs, fileExists) {
		h, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			return h, p, nil
		}
		last = err
	}
	if last == nil {
		last = errors.New("no candidate")
	}
	return 0, "", &LibraryError{What: lib.what, Names: lib.names, Dirs: dirs, Err: last}
}

// bind resolves each symbol of lib into its function variable, so that a
// missing symbol is an error rather than a panic inside purego.
func bind(h uintptr, what string, syms map[string]any) error {
	for name, fn := range syms {
		if _, err := purego.Dlsym(h, name); err != nil {
			return fmt.Errorf("%s lacks %s (too old a version?): %w", what, name, err)
		}
		purego.RegisterLibFunc(fn, h, name)
	}
	return nil
}
