package consent

import (
	"fmt"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
)

// costLimit bounds one condition's evaluation (CEL cost units).
const costLimit = 100000

var (
	envOnce sync.Once
	celEnv  *cel.Env
	envErr  error
)

func env() (*cel.Env, error) {
	envOnce.Do(func() {
		celEnv, envErr = cel.NewEnv(
			cel.Variable("args", cel.MapType(cel.StringType, cel.DynType)),
			cel.Variable("tool", cel.StringType),
			cel.Variable("server", cel.StringType),
			cel.Variable("agent", cel.StringType),
			cel.Variable("user", cel.StringType),
			cel.Variable("now", cel.TimestampType),
			pathUnderFunction,
		)
	})
	return celEnv, envErr
}

// Condition is a compiled --when expression.
type Condition struct {
	src   string
	prg   cel.Program
	names []string // member names the expression may read (see Names)
}

// Names lists every field name the condition selects (args.path) and
// every string constant in it (args["path"], "path" in args): a superset
// of the argument names it reads at any depth. The policy refuses a call
// whose arguments spell one of these in another letter case, because a
// server decoding into structs would read that member where the condition
// does not.
func (c *Condition) Names() []string { return c.names }

// readNames collects select field names and string literals of an AST.
func readNames(a *cel.Ast) []string {
	seen := map[string]bool{}
	var out []string
	celast.PreOrderVisit(a.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		var n string
		switch e.Kind() {
		case celast.SelectKind:
			n = e.AsSelect().FieldName()
		case celast.LiteralKind:
			s, ok := e.AsLiteral().(types.String)
			if !ok {
				return
			}
			n = string(s)
		default:
			return
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}))
	return out
}

// Compile type-checks a condition; errors carry the compiler's message.
func Compile(src string) (*Condition, error) {
	e, err := env()
	if err != nil {
		return nil, err
	}
	ast, iss := e.Compile(src)
	if iss.Err() != nil {
		return nil, fmt.Errorf("condition %q: %w", src, iss.Err())
	}
	if ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
		return nil, fmt.Errorf("condition %q has type %s; it must be a bool", src, ast.OutputType())
	}
	prg, err := e.Program(ast, cel.CostLimit(costLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("condition %q: %w", src, err)
	}
	return &Condition{src: src, prg: prg, names: readNames(ast)}, nil
}

// Input is what a condition sees.
type Input struct {
	Args                      map[string]any
	Tool, Server, Agent, User string
	Now                       time.Time
}

// Eval evaluates the condition; any error (including the cost limit)
// means false with the reason.
func (c *Condition) Eval(in Input) (bool, error) {
	args := in.Args
	if args == nil {
		args = map[string]any{}
	}
	out, _, err := c.prg.Eval(map[string]any{
		"args": args, "tool": in.Tool, "server": in.Server, "agent": in.Agent, "user": in.User, "now": in.Now,
	})
	if err != nil {
		return false, fmt.Errorf("condition %q: %w", c.src, err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("condition %q returned %v, not a bool", c.src, out.Value())
	}
	return b, nil
}
