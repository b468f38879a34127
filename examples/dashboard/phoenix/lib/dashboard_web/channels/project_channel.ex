defmodule DashboardWeb.ProjectChannel do
  use DashboardWeb, :channel
  alias DashboardWeb.Presence

  intercept ["deploy_started"]

  @impl true
  def join("project:" <> _id, _payload, socket) do
    DashboardWeb.Endpoint.subscribe("ops:alerts")
    :timer.send_interval(Application.get_env(:dashboard, :tick, 5_000), :tick)
    send(self(), :after_join)
    {:ok, socket}
  end

  @impl true
  def handle_in("set_status", %{"status" => status}, socket) do
    Presence.update(socket, socket.assigns.user["id"], %{status: status})
    {:reply, {:ok, %{}}, socket}
  end

  def handle_in(_event, _payload, socket) do
    {:reply, {:error, %{reason: "unknown event"}}, socket}
  end

  @impl true
  def handle_out("deploy_started", deploy, socket) do
    deploy = if socket.assigns.user["admin"], do: deploy, else: Map.delete(deploy, "secret")
    push(socket, "deploy_started", deploy)
    {:noreply, socket}
  end

  @impl true
  def handle_info(:after_join, socket) do
    {:ok, _} = Presence.track(socket, socket.assigns.user["id"], %{status: "viewing"})
    push(socket, "presence_state", Presence.list(socket))
    {:noreply, socket}
  end

  def handle_info(:tick, socket) do
    push(socket, "tick", %{})
    {:noreply, socket}
  end

  def handle_info(%Phoenix.Socket.Broadcast{topic: "ops:alerts", payload: alert}, socket) do
    push(socket, "alert", alert)
    {:noreply, socket}
  end
end
