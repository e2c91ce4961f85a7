package consent

import (
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
)

// pathUnder is the condition function pathUnder(path, dir): true when
// path names dir or something below it, as every server resolves it. A
// prefix check (args.path.startsWith("/work/")) is not that: a server
// resolves "/work/../etc/passwd" to /etc/passwd (found by a red-team
// helper against the official filesystem server). So path must be
// absolute and plain: no "." or ".." segment, no empty segment ("//"),
// no backslash and no NUL; anything else is false, which fails closed.
// It cannot see symbolic links under dir: a link there to elsewhere is
// followed by the server (keep such links out of what a server may
// write, or out of dir).
func pathUnder(path, dir string) bool {
	if !plainAbsolute(path) || !plainAbsolute(dir) {
		return false
	}
	dir = strings.TrimSuffix(dir, "/")
	return path == dir || strings.HasPrefix(path, dir+"/") || dir == ""
}

// plainAbsolute reports whether p is an absolute path of plain segments
// (a trailing "/" allowed).
func plainAbsolute(p string) bool {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\\x00") {
		return false
	}
	segs := strings.Split(strings.TrimSuffix(p[1:], "/"), "/")
	if len(segs) == 1 && segs[0] == "" {
		return true // "/"
	}
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return false
		}
	}
	return true
}

// pathUnderFunction declares pathUnder for CEL: a string that is not one
// (an argument of another type) is an error, which denies.
var pathUnderFunction = cel.Function("pathUnder",
	cel.Overload("pathUnder_string_string", []*cel.Type{cel.StringType, cel.StringType}, cel.BoolType,
		cel.BinaryBinding(func(p, d ref.Val) ref.Val {
			ps, ok1 := p.(types.String)
			ds, ok2 := d.(types.String)
			if !ok1 || !ok2 {
				return types.NewErr("pathUnder takes two strings")
			}
			return types.Bool(pathUnder(string(ps), string(ds)))
		})))
