package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/ternml/tern/pkg/atomicfile"
	"github.com/ternml/tern/pkg/auth"
	"github.com/ternml/tern/pkg/localcluster"
)

// ternConfig is ~/.tern/config: named contexts, each a coordinator to talk
// to, and which one is current, as kubeconfig has them. The address a
// cluster command uses is, first to last: --coordinator,
// $TERN_COORDINATOR, the current context's, 127.0.0.1:7070.
type ternConfig struct {
	CurrentContext string           `json:"current-context,omitempty"`
	Contexts       []clusterContext `json:"contexts"`
}

type clusterContext struct {
	Name        string `json:"name"`
	Coordinator string `json:"coordinator"`
	// TokenFile holds the join token and TLSCA the CA certificate for a
	// coordinator off loopback (pkg/auth); they are the defaults of
	// --token-file and --tls-ca while the context is current.
	TokenFile string `json:"token-file,omitempty"`
	TLSCA     string `json:"tls-ca,omitempty"`
}

// contextNameRE is what a context may be called: it appears in tables and
// on command lines.
var contextNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// configPath is $TERN_CONFIG, else the config file in tern's home
// ($TERN_HOME, else ~/.tern).
func configPath() (string, error) {
	if p := os.Getenv("TERN_CONFIG"); p != "" {
		return p, nil
	}
	h, err := localcluster.Home()
	if err != nil {
		return "", err
	}
	return filepath.Join(h, "config"), nil
}

// loadConfig reads the config file; a missing one is an empty config.
func loadConfig() (*ternConfig, string, error) {
	p, err := configPath()
	if err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &ternConfig{}, p, nil
	}
	if err != nil {
		return nil, p, err
	}
	var c ternConfig
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, p, fmt.Errorf("%s: %v (fix or remove the file)", p, err)
	}
	for _, x := range c.Contexts {
		if err := checkContext(x); err != nil {
			return nil, p, fmt.Errorf("%s: %w", p, err)
		}
	}
	return &c, p, nil
}

func checkContext(c clusterContext) error {
	if !contextNameRE.MatchString(c.Name) {
		return fmt.Errorf("context name %q: use letters, digits, '.', '_' and '-', starting with a letter or digit", c.Name)
	}
	if _, _, err := net.SplitHostPort(c.Coordinator); err != nil {
		return fmt.Errorf("context %q: coordinator %q is not host:port", c.Name, c.Coordinator)
	}
	return nil
}

// save writes the config file, private to the user since contexts may
// name token files.
func (c *ternConfig) save(path string) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, 0o600, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

func (c *ternConfig) find(name string) *clusterContext {
	for i := range c.Contexts {
		if c.Contexts[i].Name == name {
			return &c.Contexts[i]
		}
	}
	return nil
}

// set adds or replaces a context, keeping the list sorted by name.
func (c *ternConfig) set(x clusterContext) (created bool) {
	if old := c.find(x.Name); old != nil {
		*old = x
		return false
	}
	c.Contexts = append(c.Contexts, x)
	sort.Slice(c.Contexts, func(i, j int) bool { return c.Contexts[i].Name < c.Contexts[j].Name })
	return true
}

func (c *ternConfig) remove(name string) bool {
	for i := range c.Contexts {
		if c.Contexts[i].Name == name {
			c.Contexts = append(c.Contexts[:i], c.Contexts[i+1:]...)
			if c.CurrentContext == name {
				c.CurrentContext = ""
			}
			return true
		}
	}
	return false
}

func (c *ternConfig) names() []string {
	var ns []string
	for _, x := range c.Contexts {
		ns = append(ns, x.Name)
	}
	return ns
}

// contextCoordinator is the current context's coordinator address, or ""
// when there is no current context. A config file that cannot be read
// counts as none here; `ternctl config view` says what is wrong with it.
func contextCoordinator() string {
	c, _, err := loadConfig()
	if err != nil || c.CurrentContext == "" {
		return ""
	}
	if x := c.find(c.CurrentContext); x != nil {
		return x.Coordinator
	}
	return ""
}

// contextCredentialDefaults makes the current context's token file and CA
// the defaults of --token-file and --tls-ca where their environment
// variables leave them empty, so that a context carries what reaching its
// coordinator takes. Flags given on the command line still win.
func contextCredentialDefaults(fs *pflag.FlagSet) {
	c, _, err := loadConfig()
	if err != nil || c.CurrentContext == "" {
		return
	}
	x := c.find(c.CurrentContext)
	if x == nil {
		return
	}
	for name, v := range map[string]string{auth.FlagTokenFile: x.TokenFile, auth.FlagTLSCA: x.TLSCA} {
		if f := fs.Lookup(name); f != nil && v != "" && f.Value.String() == "" {
			if f.Value.Set(v) == nil {
				f.DefValue = v
			}
		}
	}
}

// useLocalContext points the context name at a local cluster's
// coordinator and makes it current.
func useLocalContext(name, addr string) error {
	c, p, err := loadConfig()
	if err != nil {
		return err
	}
	x := clusterContext{Name: name, Coordinator: addr} // loopback: no token
	if err := checkContext(x); err != nil {
		return err
	}
	c.set(x)
	c.CurrentContext = name
	return c.save(p)
}
