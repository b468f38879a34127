defmodule DashboardWeb.DeployController do
  use DashboardWeb, :controller

  def create(conn, %{"project" => project} = params) do
    deploy = Map.delete(params, "project")
    DashboardWeb.Endpoint.broadcast("project:#{project}", "deploy_started", deploy)
    conn |> put_status(:accepted) |> json(%{status: "started"})
  end
end
