#!/usr/bin/env escript
%% Prints the messages a Phoenix node with phoenix_pubsub_redis 3.x publishes
%% on its Redis channel, as Erlang/OTP itself encodes them, for
%% crates/fawkes-redis/tests/phoenix_terms.rs. Each line:
%%   <name> <hex, OTP 26+ encoding (UTF-8 atoms)> <hex, this OTP's default>
%% Regenerate with: escript phoenix_terms.escript > phoenix_terms.txt
main(_) ->
    Bc = fun(Topic, Event, Payload) ->
        #{'__struct__' => 'Elixir.Phoenix.Socket.Broadcast', topic => Topic, event => Event, payload => Payload}
    end,
    Msg = fun(Mode, Node, Topic, Event, Payload) ->
        {3, Mode, Node, Topic, Bc(Topic, Event, Payload), 'Elixir.Phoenix.Channel.Server'}
    end,
    Vectors = [
        {simple, Msg(except, 'a@h', <<"room:1">>, <<"e">>, #{<<"a">> => 1})},
        {json_kinds, Msg(except, 'app@10.0.0.7', <<"room:lobby">>, <<"new_msg">>,
            #{<<"body">> => <<"héllo ✓"/utf8>>, <<"n">> => -42, <<"big">> => 18446744073709551615,
              <<"neg_big">> => -9223372036854775808, <<"f">> => 2.5, <<"yes">> => true, <<"no">> => false,
              <<"none">> => nil, <<"list">> => [1, <<"two">>, [3], #{}], <<"bytes">> => [1, 2, 255],
              <<"empty">> => <<>>, <<"nested">> => #{<<"deep">> => #{<<"k">> => [nil]}}})},
        {direct, Msg(only, 'b@h', <<"phx:lp:tok">>, <<"request">>, #{<<"i">> => 300})},
        {binary, Msg(except, 'a@h', <<"room:bin">>, <<"blob">>, {binary, <<0, 159, 146, 150, 255>>})},
        {string_node, Msg(except, <<"node-7">>, <<"t">>, <<"e">>, #{})},
        {atom_keys, Msg(except, 'a@h', <<"t">>, <<"e">>, #{status => away, count => 3})}
    ],
    lists:foreach(fun({Name, T}) ->
        io:format("~s ~s ~s~n", [Name, hex(term_to_binary(T, [{minor_version, 2}])), hex(term_to_binary(T))])
    end, Vectors).

hex(B) -> [io_lib:format("~2.16.0b", [X]) || <<X>> <= B].
