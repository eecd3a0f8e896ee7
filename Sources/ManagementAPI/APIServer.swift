import Foundation
import Glibc
import ManagementModel
import NIOCore
import NIOHTTP1
import NIOPosix

/// Serves an ``APIRouter`` over HTTP/1.1 on a unix socket (SwiftNIO's HTTP codec), one task per
/// connection, keep-alive; the socket is created with mode 0600 (0660 with `group`).
public enum APIServer {
  /// Binds `socketPath` (replacing a stale socket) and serves until the task is cancelled.
  public static func run(
    router: APIRouter, socketPath: String, group: (any EventLoopGroup)? = nil, groupID: gid_t? = nil
  ) async throws {
    let eventLoops = group ?? MultiThreadedEventLoopGroup.singleton
    // The socket's directory is private (0700, or 0750 for the group), so nobody else can reach
    // the socket in the moment between bind and chmod.
    let server = try await ServerBootstrap(group: eventLoops)
      .serverChannelOption(.backlog, value: 256)
      .bind(unixDomainSocketPath: socketPath, cleanupExistingSocketFile: true) { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
          return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
            wrappingChannelSynchronously: channel)
        }
      }
    if let groupID { chown(socketPath, getuid(), groupID) }
    chmod(socketPath, groupID == nil ? 0o600 : 0o660)
    try await withThrowingDiscardingTaskGroup { tasks in
      try await server.executeThenClose { connections in
        for try await connection in connections {
          tasks.addTask { await serve(connection, router) }
        }
      }
    }
  }

  private static func serve(
    _ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>, _ router: APIRouter
  ) async {
    try? await connection.executeThenClose { inbound, outbound in
      var head: HTTPRequestHead?
      var body: [UInt8] = []
      var tooLarge = false
      for try await part in inbound {
        switch part {
        case .head(let requestHead):
          head = requestHead
          body = []
          tooLarge = false
        case .body(let buffer):
          if body.count + buffer.readableBytes > APIRouter.maximumBodySize {
            tooLarge = true
          } else {
            body += buffer.readableBytesView
          }
        case .end:
          guard let requestHead = head else { continue }
          head = nil
          var response: APIResponse
          if tooLarge {
            response = APIResponse.error(
              .init(.badRequest, "the request body is larger than \(APIRouter.maximumBodySize) bytes"))
            response.status = 413
          } else {
            let request = APIRequest(method: requestHead.method.rawValue, target: requestHead.uri, body: body)
            response = await router.handle(request)
          }
          let keepAlive = requestHead.isKeepAlive && !tooLarge && response.events == nil
          var headers = HTTPHeaders()
          headers.add(name: "Content-Type", value: response.contentType)
          headers.add(name: "Server", value: "skvmd")
          if let events = response.events {
            headers.add(name: "Transfer-Encoding", value: "chunked")
            try await outbound.write(
              .head(HTTPResponseHead(version: requestHead.version, status: .ok, headers: headers)))
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            for await event in events {
              let line = ((try? encoder.encode(event)) ?? Data()) + Data([0x0A])
              try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: line))))
            }
            try await outbound.write(.end(nil))
            return
          }
          headers.add(name: "Content-Length", value: String(response.body.count))
          headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
          let status = HTTPResponseStatus(statusCode: response.status)
          try await outbound.write(
            .head(HTTPResponseHead(version: requestHead.version, status: status, headers: headers)))
          try await outbound.write(.body(.byteBuffer(ByteBuffer(bytes: response.body))))
          try await outbound.write(.end(nil))
          if !keepAlive { return }
        }
      }
    }
  }
}
