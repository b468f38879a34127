defmodule DashboardWeb.DeployControllerTest do
  use DashboardWeb.ConnCase
  import Phoenix.ChannelTest

  @endpoint DashboardWeb.Endpoint

  test "a deploy reaches viewers and its secret only admins", %{conn: conn} do
    for user <- [%{"id" => "bob", "admin" => false}, %{"id" => "ada", "admin" => true}] do
      {:ok, _, _} =
        DashboardWeb.UserSocket
        |> socket(nil, %{user: user})
        |> subscribe_and_join(DashboardWeb.ProjectChannel, "project:7")
    end

    conn = post(conn, "/deploys/7", %{"id" => 1, "secret" => "s3"})
    assert json_response(conn, 202)
    assert_push "deploy_started", %{"id" => 1, "secret" => "s3"}
    assert_push "deploy_started", deploy
    refute Map.has_key?(deploy, "secret")
  end
end
