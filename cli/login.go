package cli

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/authanswer"
)

// loginWait bounds how long mcpcage login waits for the browser.
const loginWait = 5 * time.Minute

func loginCommand(socket *string, stdout, stderr io.Writer) *cobra.Command {
	var agent string
	var noBrowser bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "login SERVER",
		Short: "Sign in to a remote MCP server; mcpcaged keeps the tokens (never your MCP client)",
		Long: `Login signs you in to remote server SERVER (a server with a url) with OAuth:
it opens the authorization server's page in your browser (or prints the
link), listens on 127.0.0.1 for the answer, and hands it to mcpcaged,
which exchanges it for tokens and keeps them for you. The tokens never
reach this command, your MCP client, logs or audit records.

With --agent, the sign-in is for that agent only, with the scopes the
administrator gave it ([agents.NAME] scopes = { SERVER = [...] }).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return login(cmd.Context(), api.SocketPath(*socket), args[0], agent, !noBrowser, wait, stdout, stderr)
		},
	}
	cmd.Flags().StringVar(&agent, "agent", "", "sign in for this agent only (it has scopes of its own for the server)")
	cmd.Flags().BoolVar(&noBrowser, "no-browser", false, "print the link instead of opening a browser")
	cmd.Flags().DurationVar(&wait, "wait", loginWait, "how long to wait for the browser")
	return cmd
}

// errLinkOpenedTwice abandons a sign-in (see loginBrowser).
var errLinkOpenedTwice = errors.New("the sign-in link was opened twice")

// login runs one sign-in: listener, daemon's URL, browser, code back to
// the daemon.
func login(ctx context.Context, socket, server, agent string, browser bool, wait time.Duration, stdout, stderr io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("cannot listen on 127.0.0.1 for the sign-in's answer: %w", err)
	}
	defer func() { _ = ln.Close() }()
	redirect := fmt.Sprintf("http://%s/callback", ln.Addr())
	var start api.LoginStart
	if err := api.Call(socket, api.Request{Op: api.OpLogin, Server: server, Agent: agent, Redirect: redirect}, &start); err != nil {
		return err
	}
	type answer struct {
		authanswer.Answer
		refused error // the answer was refused here (authanswer.Parse)
	}
	got := make(chan answer, 1)
	abandon := make(chan struct{})
	var abandonOnce sync.Once
	lb := newLoginBrowser(start.URL)
	link := fmt.Sprintf("http://%s%s", ln.Addr(), lb.startPath())
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == lb.startPath() {
			if lb.start(w, r) {
				abandonOnce.Do(func() { close(abandon) })
			}
			return
		}
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		parsed, refused := authanswer.Parse(q)
		a := answer{Answer: parsed, refused: refused}
		if !authanswer.Carries(q, start.State) || !lb.sameBrowser(r) {
			http.Error(w, "this answer is not for the sign-in mcpcage login is waiting for, or comes from another browser than the one that opened its link", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		switch {
		case refused != nil:
			_, _ = fmt.Fprintf(w, "<p>mcpcage: the answer for your sign-in to %s was refused: %s</p>", html.EscapeString(server), html.EscapeString(refused.Error()))
		case a.Error != "":
			_, _ = fmt.Fprintf(w, "<p>mcpcage: signing in to %s failed: %s</p>", html.EscapeString(server), html.EscapeString(a.Error))
		default:
			_, _ = fmt.Fprintf(w, "<p>mcpcage: finishing the sign-in to %s; you can close this tab.</p>", html.EscapeString(server))
		}
		if f, ok := w.(http.Flusher); ok {
			f.Flush() // the page is the browser's before mcpcage login ends
		}
		select {
		case got <- a:
		default:
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		// Shutdown, not Close: the handler that brought the answer
		// finishes its page first (Close cut it off, and the browser
		// got no answer at all).
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
	}()

	out := &errWriter{w: stdout}
	out.printf("Sign in to %s%s in your browser (open it once, in one browser):\n\n  %s\n\n", server, agentSuffix(agent), link)
	if browser {
		if page, cleanup, err := redirectFile(link); err == nil {
			defer cleanup()
			if openBrowser(page) {
				out.printf("(opened in your browser)\n")
			}
		}
	}
	out.printf("Waiting for the answer on %s ...\n", redirect)
	if out.err != nil {
		return out.err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	// end ends the sign-in in mcpcaged too, when it takes endings (an
	// older one lets it wait out its ten minutes): nobody can finish it
	// with a code from then on, and mcpcaged records why it ended.
	end := func(why string) error {
		if !start.TakesEndings {
			return nil
		}
		return api.Call(socket, api.Request{Op: api.OpLoginDone, State: start.State, AuthIssuerSent: true, AuthRefused: why}, nil)
	}
	var a answer
	select {
	case <-abandon:
		_ = end(errLinkOpenedTwice.Error())
		return fmt.Errorf("%w, so someone else may be trying to finish your sign-in: it was abandoned; run mcpcage login %s again", errLinkOpenedTwice, server)
	case a = <-got:
	case <-timer.C:
		_ = end(fmt.Sprintf("no answer from the browser within %s", wait))
		return fmt.Errorf("no answer from the browser within %s: run mcpcage login %s again", wait, server)
	case <-ctx.Done():
		_ = end("mcpcage login was interrupted")
		return ctx.Err()
	}
	switch {
	case a.refused != nil:
		_ = end("it refused the answer: " + a.refused.Error())
		return fmt.Errorf("the answer brought to mcpcage login was refused: %w; run mcpcage login %s again", a.refused, server)
	case a.Error != "" && !start.TakesEndings:
		return fmt.Errorf("the authorization server refused the sign-in: %s; run mcpcage login %s again", a.Error, server)
	}
	// An error answer goes to mcpcaged like a code: it checks its issuer
	// (another server's refusal is not this sign-in's end: a mix-up),
	// ends the sign-in and records why.
	var info api.SignIn
	err = api.Call(socket, api.Request{Op: api.OpLoginDone, State: start.State, AuthCode: a.Code, AuthIssuer: a.Issuer, AuthIssuerSent: true, AuthError: a.Error}, &info)
	switch {
	case err != nil && a.Error != "" && strings.Contains(err.Error(), a.Error):
		// The server's own refusal (the user declined, or may not
		// sign in there): trying again may work.
		return fmt.Errorf("%w; run mcpcage login %s again", err, server)
	case err != nil:
		return err // says what to do, or, for a mix-up, not to go on
	case a.Error != "":
		return fmt.Errorf("mcpcaged took an error answer as a sign-in: run mcpcage login %s again", server)
	}
	out.printf("Signed in to %s%s (scopes: %s; expires %s). mcpcaged keeps the tokens and refreshes them.\n",
		printable(info.Server), printable(agentSuffix(info.Agent)), printable(orDefault(strings.Join(info.Scopes, " "), "-")), when(info.Expiry))
	return out.err
}

func agentSuffix(agent string) string {
	if agent == "" {
		return ""
	}
	return " for agent " + agent
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format("2006-01-02 15:04")
}

// openBrowser opens url with xdg-open when a desktop session exists.
func openBrowser(url string) bool {
	if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		return false
	}
	p, err := exec.LookPath("xdg-open")
	if err != nil {
		return false
	}
	c := exec.Command(p, url)
	if err := c.Start(); err != nil {
		return false
	}
	go func() { _ = c.Wait() }()
	return true
}

// errWriter keeps the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, a ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, a...)
	}
}

func logoutCommand(socket *string, stdout io.Writer) *cobra.Command {
	var agent string
	cmd := &cobra.Command{
		Use:   "logout SERVER",
		Short: "Remove your sign-in to a remote MCP server (revoked at the authorization server when it offers revocation)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpLogout, Server: args[0], Agent: agent}, nil); err != nil {
				return err
			}
			_, err := fmt.Fprintf(stdout, "Signed out of %s%s.\n", args[0], agentSuffix(agent))
			return err
		},
	}
	cmd.Flags().StringVar(&agent, "agent", "", "remove the agent's own sign-in")
	return cmd
}

func tokensCommand(socket *string, stdout io.Writer) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "List your sign-ins to remote servers (never the tokens themselves)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var list []api.SignIn
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpTokens, All: all}, &list); err != nil {
				return err
			}
			if len(list) == 0 {
				_, err := fmt.Fprintln(stdout, "No sign-ins: run mcpcage login SERVER.")
				return err
			}
			t := newTable(stdout)
			t.printf("USER\tSERVER\tAGENT\tSCOPES\tSUBJECT\tEXPIRES\tREFRESH\tISSUER\tID\n")
			for _, s := range list {
				refresh := "no"
				if s.Refreshable {
					refresh = "yes"
				}
				t.printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.User, s.Server, orDefault(s.Agent, "(all)"), orDefault(strings.Join(s.Scopes, " "), "-"),
					orDefault(s.Subject, "-"), when(s.Expiry), refresh, s.Issuer, s.ID)
			}
			return t.flush()
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "every user's sign-ins (root only)")
	return cmd
}

func jwksCommand(socket *string, stdout io.Writer) *cobra.Command {
	var issuer bool
	cmd := &cobra.Command{
		Use:   "jwks",
		Short: "Print the public key set of mcpcaged's actor tokens, for an authorization server to trust in token exchange",
		Long: `Jwks prints the JSON Web Key Set whose key signs mcpcaged's actor tokens:
when an agent has scopes of its own for a remote server and the server's
authorization server offers OAuth 2.0 Token Exchange (RFC 8693), mcpcaged
exchanges the user's token for one narrowed to the agent, naming the agent
in an actor token signed with this key. Give the set (and the issuer,
--issuer) to the authorization server so it trusts those actor tokens and
puts the agent in the new token's act claim.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var j api.JWKS
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpJWKS}, &j); err != nil {
				return err
			}
			if issuer {
				_, err := fmt.Fprintln(stdout, j.Issuer)
				return err
			}
			_, err := fmt.Fprintf(stdout, "%s\n", j.Keys)
			return err
		},
	}
	cmd.Flags().BoolVar(&issuer, "issuer", false, "print the iss of the actor tokens instead")
	return cmd
}
