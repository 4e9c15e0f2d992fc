//go:build !rampart_omit_cel

package policy

import (
	"fmt"
	"strings"

	"github.com/google/cel-go/cel"
)

// celEnv declares what a condition may use:
//
//	request.method, request.path, request.headers["x-name"] (lower-case
//	names), request.params.NAME (from {NAME} path segments),
//	caller (the verified SPIFFE ID), user.CLAIM (the verified end-user
//	token's claims; empty when there is none).
func celEnv() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("request", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("user", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("caller", cel.StringType),
	)
}

// CEL reports whether this program evaluates `when` conditions: true unless
// built with -tags rampart_omit_cel (cel_omit.go).
const CEL = true

// condition is a compiled `when` condition.
type condition struct{ prg cel.Program }

func compileCEL(expr string) (*condition, error) {
	env, err := celEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, fmt.Errorf("condition: %v", strings.ReplaceAll(iss.Err().Error(), "\n", " "))
	}
	if ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
		return nil, fmt.Errorf("condition must be true or false, not %s", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.CostLimit(100000))
	if err != nil {
		return nil, fmt.Errorf("condition: %w", err)
	}
	return &condition{prg}, nil
}

// evalCEL evaluates a condition; ok is false on an evaluation error
// (missing claim, wrong type, cost limit), with the error.
func evalCEL(c *condition, r *Request, params map[string]string) (result bool, err error) {
	headers := map[string]string{}
	for k, v := range r.Headers {
		// A repeated field is one list (RFC 9110 5.3), and the app may read
		// any of its values: the condition judges all of them, not the first.
		if len(v) > 0 {
			headers[strings.ToLower(k)] = strings.Join(v, ", ")
		}
	}
	user := r.User
	if user == nil {
		user = map[string]any{}
	}
	if params == nil {
		params = map[string]string{}
	}
	out, _, err := c.prg.Eval(map[string]any{
		"request": map[string]any{"method": r.Method, "path": r.Path, "headers": headers, "params": params},
		"user":    user,
		"caller":  r.Caller.String(),
	})
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("condition returned %T, not a bool", out.Value())
	}
	return b, nil
}
