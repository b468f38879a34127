defmodule DashboardWeb.UserSocket do
  use Phoenix.Socket

  channel "project:*", DashboardWeb.ProjectChannel

  @impl true
  def connect(%{"token" => token}, socket, _connect_info) do
    case Phoenix.Token.verify(DashboardWeb.Endpoint, "user socket", token, max_age: 7 * 86_400) do
      {:ok, user} -> {:ok, assign(socket, :user, user)}
      {:error, _} -> :error
    end
  end

  def connect(_params, _socket, _connect_info), do: :error

  @impl true
  def id(_socket), do: nil
end
