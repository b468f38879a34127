#!/usr/bin/env escript
%% Writes otp_terms.txt: one line per term, "name hex(term_to_binary(T))
%% hex(term_to_binary(T, [{minor_version, 2}])) hex(term_to_binary(T,
%% [compressed]))", every kind of term term_to_binary writes, as this
%% Erlang/OTP writes it. Run: escript otp_terms.escript > otp_terms.txt
-mode(compile).

main(_) ->
    X = 42,
    [Port | _] = erlang:ports(),
    Terms = [
        {small_int, 7}, {int, -70000}, {big_64, 1 bsl 40}, {big_neg, -(1 bsl 100)},
        {big_huge, 1 bsl 200}, {big_large, 1 bsl 2100}, {float, 3.5}, {neg_zero, -0.0},
        {atom, 'Elixir.Phoenix.PubSub'}, {atom_latin1, 'héllo'}, {atom_utf8, 'ünïcødé✓'},
        {binary, <<"bytes", 0, 255>>}, {empty_binary, <<>>}, {bits, <<1:3>>}, {bits_long, <<"ab", 5:5>>},
        {nil, []}, {string, "abc"}, {list, [256, 1, a]}, {improper, [1 | 2]}, {improper_long, [a, b | <<"t">>]},
        {tuple, {}}, {large_tuple, list_to_tuple(lists:seq(1, 300))},
        {map, #{a => 1, <<"b">> => [1, 2], {t} => #{}}}, {large_map, maps:from_list([{I, I} || I <- lists:seq(1, 40)])},
        {pid, self()}, {port, Port}, {ref, make_ref()},
        {export_fun, fun erlang:self/0}, {fun_closure, fun(Y) -> X + Y end}, {fun_plain, fun() -> ok end},
        {nested, {pub, heartbeat, {node1, 1796051446938584}, empty, [self(), make_ref(), #{k => [{1, 2.5}]}]}}
    ],
    [io:format("~s ~s ~s ~s~n", [Name, hex(term_to_binary(T)), hex(term_to_binary(T, [{minor_version, 2}])),
                                 hex(term_to_binary(T, [compressed]))])
     || {Name, T} <- Terms].

hex(B) -> binary:encode_hex(B).
