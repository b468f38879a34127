defmodule DashboardWeb.ProjectChannelTest do
  use DashboardWeb.ChannelCase

  defp join(user, project) do
    {:ok, _, socket} =
      DashboardWeb.UserSocket
      |> socket(nil, %{user: user})
      |> subscribe_and_join(DashboardWeb.ProjectChannel, "project:#{project}")

    socket
  end

  test "only a valid token connects" do
    token = Phoenix.Token.sign(@endpoint, "user socket", %{"id" => "ada", "admin" => false})
    assert {:ok, _} = connect(DashboardWeb.UserSocket, %{"token" => token})
    assert :error = connect(DashboardWeb.UserSocket, %{"token" => "forged"})
  end

  test "viewers, statuses, ticks and alerts" do
    socket = join(%{"id" => "ada", "admin" => false}, "1")
    assert_push "presence_state", %{"ada" => %{metas: [%{status: "viewing"}]}}
    ref = push(socket, "set_status", %{"status" => "away"})
    assert_reply ref, :ok, %{}
    assert_push "presence_diff", %{joins: %{"ada" => %{metas: [%{status: "away"}]}}}
    assert_push "tick", %{}
    DashboardWeb.Endpoint.broadcast("ops:alerts", "alert", %{"message" => "disk full"})
    assert_push "alert", %{"message" => "disk full"}
  end
end
