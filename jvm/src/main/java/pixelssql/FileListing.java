package pixelssql;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryIteratorException;
import java.nio.file.DirectoryStream;
import java.nio.file.FileSystemException;
import java.nio.file.FileSystems;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;
import java.nio.file.Path;
import java.nio.file.PathMatcher;
import java.nio.file.Paths;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.Deque;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;

/**
 * The file walk behind {@code list_files}: every file under a folder, one entry each, with the
 * things Spark's {@code binaryFile} listing leaves out (zero-byte files, names starting with
 * {@code _}) and the failures it does not survive (an unreadable folder, a dangling symlink, a
 * symlink loop) given as entries with a reason instead.
 *
 * <p>Local paths (no scheme, or {@code file:}) are walked by {@link LocalWalk} ({@code java.nio},
 * one {@code lstat} per entry, in parts that Spark tasks walk side by side). Symlinks are
 * followed; an entry reached through a symlink is listed only when its real path is not listed
 * without one. Other schemes go through the Hadoop {@link FileSystem} of the path. The path is
 * never read as a glob.
 *
 * <p>{@code java -cp pixels-sql-extensions.jar:<spark jars>/* pixelssql.FileListing [--glob G]
 * [--no-recursive] PATH} prints the same listing as tab-separated lines, without Spark.
 */
public final class FileListing {

  /** Reason of an entry whose target does not exist (dangling symlink) or cannot be read. */
  public static final String NOT_FOUND = "not_found";

  /** Reason of a folder that cannot be listed, or an entry whose attributes cannot be read. */
  public static final String UNREADABLE = "unreadable";

  /** Reason of a named pipe, socket or device: listed, but it holds no file content. */
  public static final String NOT_REGULAR = "not_regular";

  private static final Pattern SCHEME = Pattern.compile("[A-Za-z][A-Za-z0-9+.-]*");

  /** One listed thing; {@code reason} is null for a regular file. */
  public static final class Entry {
    public final String path;
    public final Long modificationTime;
    public final Long length;
    public final String reason;
    public final String message;

    Entry(String path, Long modificationTime, Long length, String reason, String message) {
      this.path = path;
      this.modificationTime = modificationTime;
      this.length = length;
      this.reason = reason;
      this.message = message;
    }
  }

  private FileListing() {}

  /**
   * Lists {@code path}: every file under it (only its own files when {@code recursive} is false)
   * whose name matches {@code glob}, sorted by path. A file gives one entry; a path that does not
   * exist is an {@link IllegalArgumentException}.
   *
   * @param hadoopConf the Hadoop configuration for paths with a scheme other than {@code file:};
   *     may be null for local paths
   */
  public static List<Entry> list(
      String path, String glob, boolean recursive, Configuration hadoopConf) throws IOException {
    matcher(glob);
    String scheme = scheme(path);
    List<Entry> entries = new ArrayList<>();
    if (scheme == null || scheme.equalsIgnoreCase("file")) {
      Path root = localPath(path, scheme);
      boolean file = !checkRoot(path, root).isDirectory();
      LocalWalk.Scope scope =
          LocalWalk.Scope.of(
              root,
              glob,
              recursive,
              LocalWalk.Naming.LIST_FILES,
              NativeFolders.wanted(System.getProperty(NativeFolders.CONF, "true")));
      new LocalWalk.Walker(scope, List.of(LocalWalk.Unit.root(root, file)))
          .forEachRemaining(entries::add);
      return entries;
    }
    entries =
        new HadoopWalk(matcher(glob), recursive)
            .run(path, hadoopConf == null ? new Configuration() : hadoopConf);
    entries.sort(Comparator.comparing((Entry e) -> e.path, FileListing::compareCodePoints));
    return entries;
  }

  /**
   * The attributes of a local root (symlinks followed), or the error a query gets for it: a
   * path that does not exist, or cannot be read.
   */
  static BasicFileAttributes checkRoot(String given, Path root) {
    try {
      return Files.readAttributes(root, BasicFileAttributes.class);
    } catch (NoSuchFileException e) {
      String detail = "";
      if (Files.isSymbolicLink(root)) {
        detail = " (a symlink to " + LocalWalk.linkTarget(root) + ", which does not exist)";
      }
      throw new IllegalArgumentException(
          ListFiles.FUNCTION_NAME + ": path does not exist: " + given + detail, e);
    } catch (IOException e) {
      throw new IllegalArgumentException(
          ListFiles.FUNCTION_NAME + ": cannot read path " + given + ": " + describe(e), e);
    }
  }

  /**
   * Whether this listing walks {@code path} itself: a local path, or a scheme that a Hadoop file
   * system of this application implements. Object storage without one (s3://, gs:// and abfs://
   * on the pyspark wheel) is listed by pixels-sql's Python lister instead ({@link ListFiles}).
   */
  public static boolean hadoopLists(String path, Configuration conf) {
    String scheme = scheme(path);
    if (scheme == null || scheme.equalsIgnoreCase("file")) {
      return true;
    }
    try {
      FileSystem.getFileSystemClass(scheme, conf);
      return true;
    } catch (IOException e) {
      return false;
    }
  }

  /** The URI scheme of {@code path} ({@code hdfs}, {@code file}, ...), null for a plain path. */
  static String scheme(String path) {
    int colon = path.indexOf(':');
    int slash = path.indexOf('/');
    if (colon <= 0 || (slash >= 0 && slash < colon)) {
      return null;
    }
    String scheme = path.substring(0, colon);
    return SCHEME.matcher(scheme).matches() ? scheme : null;
  }

  /** The local path of a plain path or a {@code file:} URI, taken literally (no decoding). */
  static Path localPath(String path, String scheme) {
    String local = path;
    if (scheme != null) {
      local = path.substring(scheme.length() + 1);
      if (local.startsWith("//")) {
        int end = local.indexOf('/', 2);
        String authority = end < 0 ? local.substring(2) : local.substring(2, end);
        if (!authority.isEmpty() && !authority.equalsIgnoreCase("localhost")) {
          throw new IllegalArgumentException(
              ListFiles.FUNCTION_NAME + ": a file: path cannot name a host: " + path);
        }
        local = end < 0 ? "/" : local.substring(end);
      }
    }
    if (local.isEmpty()) {
      throw new IllegalArgumentException(ListFiles.FUNCTION_NAME + " needs a non-empty path");
    }
    try {
      return Paths.get(local).toAbsolutePath().normalize();
    } catch (InvalidPathException e) {
      throw new IllegalArgumentException(
          ListFiles.FUNCTION_NAME + ": invalid path " + path + ": " + e.getReason(), e);
    }
  }

  /** A file-name matcher for {@code glob}; null when every name matches. */
  static PathMatcher matcher(String glob) {
    if (glob == null || glob.equals("*")) {
      return null;
    }
    try {
      return FileSystems.getDefault().getPathMatcher("glob:" + glob);
    } catch (PatternSyntaxException e) {
      throw new IllegalArgumentException(
          ListFiles.FUNCTION_NAME + ": invalid glob '" + glob + "': " + e.getDescription(), e);
    }
  }

  /** Orders strings by code point, as Spark orders UTF-8 strings (not by UTF-16 unit). */
  static int compareCodePoints(String a, String b) {
    int n = Math.min(a.length(), b.length());
    for (int i = 0; i < n; i++) {
      char x = a.charAt(i);
      char y = b.charAt(i);
      if (x != y) {
        if (x >= 0xD800 && y >= 0xD800) {
          x = x >= 0xE000 ? (char) (x - 0x800) : (char) (x + 0x2000);
          y = y >= 0xE000 ? (char) (y - 0x800) : (char) (y + 0x2000);
        }
        return x - y;
      }
    }
    return a.length() - b.length();
  }

  private static boolean hidden(String name) {
    return name.startsWith(".");
  }

  /** The operating system's words for a failure ("Permission denied"), else the exception. */
  static String describe(Exception e) {
    if (e instanceof DirectoryIteratorException) {
      return describe(((DirectoryIteratorException) e).getCause());
    }
    if (e instanceof FileSystemException) {
      String reason = ((FileSystemException) e).getReason();
      if (reason != null) {
        return reason;
      }
      if (e instanceof AccessDeniedException) {
        return "Permission denied";
      }
      if (e instanceof NoSuchFileException) {
        return "No such file or directory";
      }
      if (e instanceof NotDirectoryException) {
        return "Not a directory";
      }
      return e.getClass().getSimpleName();
    }
    return e.toString();
  }

  /** Walks a tree of any Hadoop file system. */
  private static final class HadoopWalk {
    private final PathMatcher matcher;
    private final boolean recursive;
    private final List<Entry> entries = new ArrayList<>();

    HadoopWalk(PathMatcher matcher, boolean recursive) {
      this.matcher = matcher;
      this.recursive = recursive;
    }

    List<Entry> run(String given, Configuration conf) throws IOException {
      org.apache.hadoop.fs.Path root = new org.apache.hadoop.fs.Path(given);
      FileSystem fs = root.getFileSystem(conf);
      FileStatus status;
      try {
        status = fs.getFileStatus(root);
      } catch (FileNotFoundException e) {
        throw new IllegalArgumentException(
            ListFiles.FUNCTION_NAME + ": path does not exist: " + given, e);
      }
      if (!status.isDirectory()) {
        file(status);
        return entries;
      }
      Deque<org.apache.hadoop.fs.Path> folders = new ArrayDeque<>();
      folders.push(status.getPath());
      while (!folders.isEmpty()) {
        org.apache.hadoop.fs.Path folder = folders.pop();
        FileStatus[] children;
        try {
          children = fs.listStatus(folder);
        } catch (FileNotFoundException e) {
          continue; // deleted since its parent was read
        } catch (IOException e) {
          entries.add(
              new Entry(
                  folder.toString(),
                  null,
                  null,
                  UNREADABLE,
                  "cannot list folder " + folder + ": " + e.getMessage()));
          continue;
        }
        for (FileStatus child : children) {
          if (hidden(child.getPath().getName())) {
            continue;
          }
          if (child.isDirectory()) {
            if (recursive) {
              folders.push(child.getPath());
            }
          } else {
            file(child);
          }
        }
      }
      return entries;
    }

    private void file(FileStatus status) {
      String name = status.getPath().getName();
      if (matcher != null && (name.isEmpty() || !matcher.matches(Paths.get(name)))) {
        return;
      }
      entries.add(
          new Entry(
              status.getPath().toString(),
              status.getModificationTime(),
              status.getLen(),
              null,
              null));
    }
  }

  /** Prints the listing of one path as tab-separated lines (see the class comment). */
  public static void main(String[] args) throws IOException {
    String glob = "*";
    boolean recursive = true;
    String path = null;
    for (int i = 0; i < args.length; i++) {
      if (args[i].equals("--glob") && i + 1 < args.length) {
        glob = args[++i];
      } else if (args[i].equals("--no-recursive")) {
        recursive = false;
      } else if (path == null) {
        path = args[i];
      } else {
        System.err.println("usage: FileListing [--glob G] [--no-recursive] PATH");
        System.exit(2);
      }
    }
    if (path == null) {
      System.err.println("usage: FileListing [--glob G] [--no-recursive] PATH");
      System.exit(2);
    }
    PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
    for (Entry e : list(path, glob, recursive, null)) {
      out.println(
          String.join(
              "\t",
              e.path,
              String.valueOf(e.modificationTime),
              String.valueOf(e.length),
              String.valueOf(e.reason),
              String.valueOf(e.message)));
    }
    out.flush();
  }
}
